//! Intel's TCB collateral against real TDX quotes (the shared fixtures'
//! attestation/tdx-collateral/README.md): genuine TCB Info
//! and QE Identity verify and give their status at their own time, and nothing else verifies —
//! not after nextUpdate, not with a byte changed, not under another chain, not for another
//! platform, not from malformed or huge files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use teelog_attest::tcb::{
    CollateralFiles, TcbPolicy, TcbStatus, TdxCollateral, VerifiedCollateral, MAX_COLLATERAL_JSON_BYTES,
};
use teelog_attest::tdx::{TdxQuote, TdxVerified};
use teelog_attest::AttestError;
use teelog_core::crypto::pem_encode;
use teelog_core::timestamp::parse_rfc3339;
use teelog_fixtures::Fixtures;

/// A file of Intel's collateral (or a quote it is for) in the shared fixtures.
fn data(f: &Fixtures, name: &str) -> Vec<u8> {
    f.read(&format!("tdx-collateral/{name}"))
}

fn at(text: &str) -> u64 {
    u64::try_from(parse_rfc3339(text).unwrap() / 1_000_000_000).unwrap()
}

/// A set's files; the QE Identity's chain is the TCB Info's where the set has one file.
#[derive(Clone)]
struct Set {
    tcb_info: Vec<u8>,
    tcb_chain: Vec<u8>,
    qe_identity: Vec<u8>,
    qe_chain: Vec<u8>,
    pck_crl: Option<Vec<u8>>,
    root_ca_crl: Option<Vec<u8>>,
    /// The Intel SGX Root CA (DER) the collateral must chain to.
    root: Vec<u8>,
}

impl Set {
    fn load(f: &Fixtures, dir: &str) -> Set {
        let tcb_chain = data(f, &format!("{dir}/tcb_info_issuer_chain.pem"));
        let dir_path = f.path(&format!("tdx-collateral/{dir}"));
        let optional = |name: &str| std::fs::read(dir_path.join(name)).ok();
        let root = f.read("roots/intel_sgx_root_ca.pem");
        Set {
            tcb_info: data(f, &format!("{dir}/tcb_info.json")),
            qe_identity: data(f, &format!("{dir}/qe_identity.json")),
            qe_chain: optional("qe_identity_issuer_chain.pem").unwrap_or_else(|| tcb_chain.clone()),
            tcb_chain,
            pck_crl: optional("pck_crl.der"),
            root_ca_crl: optional("root_ca_crl.der"),
            root: CertificateDer::from_pem_slice(&root).unwrap().to_vec(),
        }
    }

    fn files(&self) -> CollateralFiles<'_> {
        CollateralFiles {
            tcb_info: &self.tcb_info,
            tcb_info_issuer_chain: &self.tcb_chain,
            qe_identity: &self.qe_identity,
            qe_identity_issuer_chain: &self.qe_chain,
            pck_crl: self.pck_crl.as_deref(),
            root_ca_crl: self.root_ca_crl.as_deref(),
        }
    }

    fn verify(&self, when: u64) -> Result<VerifiedCollateral, AttestError> {
        TdxCollateral::parse(self.files()).and_then(|c| c.verify(&self.root, when))
    }
}

fn quote(bytes: &[u8], when: u64, allow_debug: bool) -> TdxVerified {
    TdxQuote::parse(bytes).unwrap().verify(when, allow_debug).unwrap()
}

/// dcap-qvl's collateral is valid from 2025-06-19T10:32:27Z to 2025-07-19T10:16:03Z.
fn dcap_qvl_time() -> u64 {
    at("2025-07-01T00:00:00Z")
}

#[test]
fn a_production_td_on_an_up_to_date_tdx_1_5_platform() {
    let Some(f) = common::fixtures() else { return };
    let when = dcap_qvl_time();
    let verified = quote(&data(&f, "dcap-qvl/quote.dat"), when, false);
    assert_eq!(verified.quote.tee_tcb_svn[..3], [6, 1, 3]); // module SVN 6, TDX 1.5 (version 1)
    let collateral = Set::load(&f, "dcap-qvl").verify(when).unwrap();
    assert_eq!(hex::encode(collateral.root_sha256), teelog_attest::tdx::INTEL_SGX_ROOT_CA_SHA256);
    let tcb = collateral.evaluate(&verified).unwrap();
    assert_eq!(tcb.status, TcbStatus::UpToDate);
    assert_eq!(tcb.platform_status, TcbStatus::UpToDate);
    assert_eq!(tcb.module_status, Some(TcbStatus::UpToDate)); // TDX_01, SVN 6 ≥ 4
    assert_eq!(tcb.qe_status, TcbStatus::UpToDate);
    assert!(tcb.advisory_ids.is_empty());
    assert_eq!(hex::encode_upper(tcb.fmspc), "B0C06F000000");
    assert_eq!(tcb.tcb_date, at("2024-03-13T00:00:00Z"));
    assert_eq!(tcb.tcb_evaluation_data_number, 17);
    assert_eq!(tcb.collateral_next_update, at("2025-07-19T10:16:03Z"));
    assert!(tcb.crls_checked);
    tcb.check(TcbPolicy::default()).unwrap();
}

#[test]
fn the_shared_debug_td_on_an_up_to_date_tdx_1_0_platform_with_pcs_files_as_downloaded() {
    let Some(f) = common::fixtures() else { return };
    // go-tdx-guest's PCS responses (byte for byte, the chain still URL-encoded as in the
    // header) are for FMSPC 50806F000000, the platform of the quote in shared/fixtures.
    let when = at("2023-06-20T00:00:00Z");
    let verified = quote(&f.read("tdx/tdx_trustee_quote_v4.dat"), when, true);
    let set = Set::load(&f, "go-tdx-guest");
    assert!(set.tcb_chain.starts_with(b"-----BEGIN%20CERTIFICATE-----%0A"));
    let tcb = set.verify(when).unwrap().evaluate(&verified).unwrap();
    assert_eq!(tcb.status, TcbStatus::UpToDate);
    assert_eq!(tcb.module_status, None); // TDX 1.0: tdxModule, no identity levels
    assert_eq!(tcb.tcb_date, at("2023-02-15T00:00:00Z"));
    assert_eq!(tcb.tcb_evaluation_data_number, 15);
    assert_eq!(hex::encode_upper(tcb.fmspc), "50806F000000");
    assert!(tcb.crls_checked);
}

#[test]
fn with_crls_every_certificate_needs_a_current_crl_of_its_issuer() {
    let Some(f) = common::fixtures() else { return };
    let verified = quote(&data(&f, "dcap-qvl/quote.dat"), dcap_qvl_time(), false);
    let evaluate = |set: &Set, when: u64| set.verify(when).and_then(|c| c.evaluate(&verified));
    // Without CRLs the chains are not checked for revocation, and that is said.
    let none = Set { pck_crl: None, root_ca_crl: None, ..Set::load(&f, "dcap-qvl") };
    assert!(!evaluate(&none, dcap_qvl_time()).unwrap().crls_checked);
    // The PCK CRL's nextUpdate is 2025-07-19T10:00:35Z, before the collateral's.
    let err = evaluate(&Set::load(&f, "dcap-qvl"), at("2025-07-19T10:10:00Z")).unwrap_err();
    assert!(matches!(&err, AttestError::Chain(why) if why.contains("CRL is not current")), "{err}");
    // The root CA's CRL twice: nothing covers the PCK certificate.
    let root_twice = Set { pck_crl: Set::load(&f, "dcap-qvl").root_ca_crl, ..Set::load(&f, "dcap-qvl") };
    let err = evaluate(&root_twice, dcap_qvl_time()).unwrap_err();
    assert!(matches!(&err, AttestError::Chain(why) if why.contains("no CRL given covers")), "{err}");
    // 2023's CRLs are not current in 2025.
    let old = Set::load(&f, "go-tdx-guest");
    let stale = Set { pck_crl: old.pck_crl, root_ca_crl: old.root_ca_crl, ..Set::load(&f, "dcap-qvl") };
    assert!(matches!(stale.verify(dcap_qvl_time()), Err(AttestError::Chain(_))));
    // One CRL alone, and a CRL that is not one, are refused as they are read.
    let one = Set { root_ca_crl: None, ..Set::load(&f, "dcap-qvl") };
    assert!(matches!(TdxCollateral::parse(one.files()), Err(AttestError::Collateral(_))));
    let garbage = Set { pck_crl: Some(b"not a CRL".to_vec()), ..Set::load(&f, "dcap-qvl") };
    assert!(matches!(TdxCollateral::parse(garbage.files()), Err(AttestError::Collateral(_))));
}

#[test]
fn collateral_is_valid_only_between_issue_date_and_next_update() {
    let Some(f) = common::fixtures() else { return };
    let set = Set::load(&f, "dcap-qvl");
    for (when, ok) in [
        ("2025-06-19T10:32:26Z", false), // before the QE Identity's issueDate
        ("2025-06-19T10:32:27Z", true),
        ("2025-07-19T10:16:03Z", true),
        ("2025-07-19T10:16:04Z", false), // after the TCB Info's nextUpdate
        ("2026-01-01T00:00:00Z", false),
    ] {
        match set.verify(at(when)) {
            Ok(_) => assert!(ok, "accepted at {when}"),
            Err(e) => {
                assert!(!ok, "refused at {when}: {e}");
                assert!(matches!(e, AttestError::Collateral(_)), "{e}");
                assert!(e.to_string().contains("nextUpdate"), "{e}");
            }
        }
    }
    // The TCB Signing certificate of the 2023 set expired on 2025-05-21.
    let err = Set::load(&f, "go-tdx-guest").verify(at("2025-06-01T00:00:00Z")).unwrap_err();
    assert!(matches!(err, AttestError::Chain(_)), "{err}");
}

/// Every `step`th byte of the file `which` picks, in `range`, flipped, is refused.
fn flips_are_refused(
    set: &Set,
    which: fn(&mut Set) -> &mut Vec<u8>,
    range: std::ops::Range<usize>,
    step: usize,
) {
    for i in range.step_by(step) {
        let mut changed = set.clone();
        which(&mut changed)[i] ^= 0x01;
        assert!(changed.verify(dcap_qvl_time()).is_err(), "flipping byte {i} went unnoticed");
    }
}

#[test]
fn any_flipped_byte_of_a_signed_body_or_its_signature_is_refused() {
    let Some(f) = common::fixtures() else { return };
    let set = Set::load(&f, "dcap-qvl");
    let body_start = "{\"tcbInfo\":".len();
    let sig_start = set.tcb_info.len() - 2 - 128;
    flips_are_refused(&set, |s| &mut s.tcb_info, body_start..sig_start, 5);
    flips_are_refused(&set, |s| &mut s.tcb_info, sig_start..sig_start + 128, 1);
    let qe_start = "{\"enclaveIdentity\":".len();
    let qe_sig = set.qe_identity.len() - 2 - 128;
    flips_are_refused(&set, |s| &mut s.qe_identity, qe_start..qe_sig, 3);
    flips_are_refused(&set, |s| &mut s.qe_identity, qe_sig..qe_sig + 128, 1);
    // A case change of a hex digit in the signed body keeps its meaning, but not its signature.
    let mut upper = Set::load(&f, "dcap-qvl");
    let at_fmspc = upper.tcb_info.windows(6).position(|w| w == b"B0C06F").unwrap();
    upper.tcb_info[at_fmspc..at_fmspc + 6].copy_from_slice(b"b0c06f");
    let err = upper.verify(dcap_qvl_time()).unwrap_err();
    assert!(err.to_string().contains("signature does not verify"), "{err}");
}

/// An issuer chain of a fresh root and an "Intel SGX TCB Signing" certificate under it, and
/// `body` signed by that certificate's key as the PCS would sign it.
fn forged(body: &str, name: &str) -> (Vec<u8>, Vec<u8>) {
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
    let mut root = rcgen::CertificateParams::default();
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.distinguished_name.push(rcgen::DnType::CommonName, "Intel SGX Root CA");
    let root =
        rcgen::CertifiedIssuer::self_signed(root, rcgen::KeyPair::generate_for(p256).unwrap()).unwrap();
    let mut leaf = rcgen::CertificateParams::default();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, "Intel SGX TCB Signing");
    let key = rcgen::KeyPair::generate_for(p256).unwrap();
    let leaf = leaf.signed_by(&key, &root).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.serialize_der(),
        &rng,
    )
    .unwrap();
    let signature = signer.sign(&rng, body.as_bytes()).unwrap();
    let json = format!("{{\"{name}\":{body},\"signature\":\"{}\"}}", hex::encode(signature.as_ref()));
    let chain = pem_encode("CERTIFICATE", leaf.der()) + &pem_encode("CERTIFICATE", root.der());
    (json.into_bytes(), chain.into_bytes())
}

#[test]
fn collateral_signed_under_another_chain_is_refused() {
    let Some(f) = common::fixtures() else { return };
    let set = Set::load(&f, "dcap-qvl");
    let text = String::from_utf8(set.tcb_info.clone()).unwrap();
    let body = &text["{\"tcbInfo\":".len()..text.rfind(",\"signature\"").unwrap()];
    let (json, chain) = forged(body, "tcbInfo");
    let forged_set = Set { tcb_info: json.clone(), tcb_chain: chain.clone(), ..Set::load(&f, "dcap-qvl") };
    let err = forged_set.verify(dcap_qvl_time()).unwrap_err();
    assert!(matches!(&err, AttestError::Chain(why) if why.contains("does not reach a pinned root")), "{err}");
    // The forged signature under Intel's genuine chain fails too.
    let under_intel = Set { tcb_info: json, ..Set::load(&f, "dcap-qvl") };
    let err = under_intel.verify(dcap_qvl_time()).unwrap_err();
    assert!(err.to_string().contains("signature does not verify"), "{err}");
    // The genuine document under the forged chain: the chain fails first.
    let genuine = Set { tcb_chain: chain, ..Set::load(&f, "dcap-qvl") };
    assert!(matches!(genuine.verify(dcap_qvl_time()), Err(AttestError::Chain(_))));
    // Only the pinned Intel root is a root at all.
    let amd = f.read("snp/snp_trustee_milan_vcek.der");
    let parsed = TdxCollateral::parse(set.files()).unwrap();
    assert!(matches!(parsed.verify(&amd, dcap_qvl_time()), Err(AttestError::Root(_))));
    // The PCK chain is no TCB Signing chain: the PCK Platform CA is Intel's, but not the signer.
    let quote = data(&f, "dcap-qvl/quote.dat");
    let pck_chain = &quote[quote.windows(5).position(|w| w == b"-----").unwrap()..quote.len() - 1];
    let pck_signed = Set { tcb_chain: pck_chain.to_vec(), ..Set::load(&f, "dcap-qvl") };
    assert!(pck_signed.verify(dcap_qvl_time()).is_err());
}

#[test]
fn collateral_for_another_platform_is_refused_by_fmspc() {
    let Some(f) = common::fixtures() else { return };
    // trustee's TCB Info (FMSPC 00A06D080000) and QE Identity, genuine and valid on 2025-10-28,
    // against dcap-qvl's quote (FMSPC B0C06F000000), whose PCK certificate is valid then too.
    let when = at("2025-10-28T07:00:00Z");
    let verified = quote(&data(&f, "dcap-qvl/quote.dat"), when, false);
    let collateral = Set::load(&f, "trustee").verify(when).unwrap();
    let err = collateral.evaluate(&verified).unwrap_err();
    assert!(matches!(err, AttestError::TcbMismatch(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("FMSPC 00A06D080000") && text.contains("FMSPC B0C06F000000"), "{text}");
}

#[test]
fn malformed_huge_and_mislabelled_collateral_gets_a_typed_error() {
    let Some(f) = common::fixtures() else { return };
    let set = Set::load(&f, "dcap-qvl");
    let with_tcb = |tcb_info: Vec<u8>| Set { tcb_info, ..Set::load(&f, "dcap-qvl") };
    let parse = |s: &Set| TdxCollateral::parse(s.files()).expect_err("accepted");

    let huge = with_tcb(vec![b' '; MAX_COLLATERAL_JSON_BYTES + 1]);
    assert!(matches!(parse(&huge), AttestError::TooLarge { .. }));
    for bad in [&b""[..], b"null", b"[]", b"{}", b"\xff\xfe", b"{\"tcbInfo\":{},\"signature\":\"00\"}"] {
        assert!(matches!(parse(&with_tcb(bad.to_vec())), AttestError::Collateral(_)), "{bad:?}");
    }
    let deep = format!("{{\"tcbInfo\":{}{},\"signature\":\"\"}}", "[".repeat(5000), "]".repeat(5000));
    assert!(matches!(parse(&with_tcb(deep.into_bytes())), AttestError::Collateral(_)));
    // A QE Identity given as TCB Info, and the other way round.
    let swapped = Set {
        tcb_info: set.qe_identity.clone(),
        qe_identity: set.tcb_info.clone(),
        ..Set::load(&f, "dcap-qvl")
    };
    assert!(parse(&swapped).to_string().contains("\"tcbInfo\""));
    // A duplicated member, an unknown envelope member, an SGX TCB Info.
    let text = String::from_utf8(set.tcb_info.clone()).unwrap();
    for changed in [
        text.replacen("\"version\":3,", "\"version\":3,\"version\":3,", 1),
        text.replacen("{\"tcbInfo\"", "{\"x\":1,\"tcbInfo\"", 1),
        text.replacen("\"id\":\"TDX\"", "\"id\":\"SGX\"", 1),
        text.replacen("\"fmspc\":\"B0C06F000000\"", "\"fmspc\":\"B0C06F\"", 1),
        text.replacen("\"tcbStatus\":\"UpToDate\"", "\"tcbStatus\":\"Fine\"", 1),
        text.replacen("{\"svn\":0},", "", 1),
    ] {
        assert!(matches!(parse(&with_tcb(changed.into_bytes())), AttestError::Collateral(_)));
    }
    // Every truncation, and garbage chains.
    for len in (0..set.tcb_info.len()).step_by(17) {
        assert!(TdxCollateral::parse(with_tcb(set.tcb_info[..len].to_vec()).files()).is_err(), "{len}");
    }
    for chain in [&b""[..], b"%", b"%zz", b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"] {
        let s = Set { tcb_chain: chain.to_vec(), ..Set::load(&f, "dcap-qvl") };
        assert!(matches!(parse(&s), AttestError::Collateral(_)), "{chain:?}");
    }
}

#[test]
fn policy_accepts_up_to_date_and_hardening_and_refuses_out_of_date_and_revoked_unless_allowed() {
    let Some(f) = common::fixtures() else { return };
    let when = dcap_qvl_time();
    let mut tcb = Set::load(&f, "dcap-qvl")
        .verify(when)
        .unwrap()
        .evaluate(&quote(&data(&f, "dcap-qvl/quote.dat"), when, false))
        .unwrap();
    let strict = TcbPolicy::default();
    let lenient = TcbPolicy { allow_out_of_date: true, allow_revoked: true };
    for (status, accepted) in [
        (TcbStatus::UpToDate, true),
        (TcbStatus::SwHardeningNeeded, true),
        (TcbStatus::ConfigurationNeeded, true),
        (TcbStatus::ConfigurationAndSwHardeningNeeded, true),
        (TcbStatus::OutOfDate, false),
        (TcbStatus::OutOfDateConfigurationNeeded, false),
        (TcbStatus::Revoked, false),
    ] {
        tcb.status = status;
        tcb.advisory_ids = vec!["INTEL-SA-00837".into()];
        assert_eq!(tcb.check(strict).is_ok(), accepted, "{status}");
        assert_eq!(status.warning().is_none(), status == TcbStatus::UpToDate);
        tcb.check(lenient).unwrap();
        if let Err(e) = tcb.check(strict) {
            let text = e.to_string();
            assert!(text.contains(status.name()) && text.contains("INTEL-SA-00837"), "{text}");
            let flag =
                if status == TcbStatus::Revoked { "--allow-revoked-tcb" } else { "--allow-outdated-tcb" };
            assert!(text.contains(flag), "{text}");
        }
    }
    let only_outdated = TcbPolicy { allow_out_of_date: true, allow_revoked: false };
    tcb.status = TcbStatus::Revoked;
    assert!(tcb.check(only_outdated).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Random bytes, and the real files with random bytes overwritten, never panic.
    #[test]
    fn arbitrary_collateral_never_panics(
        garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..8),
    ) {
        let Some(f) = common::fixtures() else { return Ok(()) };
        let mut set = Set::load(&f, "dcap-qvl");
        for (at, byte) in &edits {
            let len = set.tcb_info.len();
            set.tcb_info[at % len] = *byte;
            let len = set.tcb_chain.len();
            set.tcb_chain[at % len] = *byte;
        }
        let _ = set.verify(dcap_qvl_time());
        let garbage_set = Set { qe_identity: garbage.clone(), qe_chain: garbage, ..Set::load(&f, "dcap-qvl") };
        proptest::prop_assert!(garbage_set.verify(dcap_qvl_time()).is_err());
    }
}
