//! `teelog attest verify`: check one attestation document offline and show what it proves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::Serialize;
use teelog_attest::nitro::{NitroDocument, NitroVerified};
use teelog_attest::snp::{SnpReport, SnpVerified, REPORT_LEN};
use teelog_attest::tcb::{TcbEvaluation, TcbPolicy, TcbStatus, TdxCollateral};
use teelog_attest::tdx::{TdxQuote, TdxVerified};
use teelog_attest::tpm::bundle::{TpmBundle, TpmBundleVerified};
use teelog_attest::{decode_document, AttestError};
use teelog_core::timestamp::{format_rfc3339, parse_rfc3339};
use teelog_core::verify::TrustBasis;
use teelog_core::PublicKey;
use teelog_trust::CollateralDir;

#[derive(clap::Subcommand, Clone)]
pub enum AttestCommand {
    /// Verify an attestation document: an AWS Nitro (or dev) document or a TPM evidence bundle
    /// as raw CBOR, base64 or hex, an AMD SEV-SNP report (1184 bytes, with --vcek and --amd-chain), or an Intel
    /// TDX DCAP v4 quote.
    /// Exit 0 verified, 1 rejected, 2 on usage or I/O errors.
    Verify(AttestVerifyArgs),
}

#[derive(clap::Args, Clone)]
pub struct AttestVerifyArgs {
    /// The document (`-` for stdin).
    pub document: PathBuf,
    /// Also require that the document binds this teelog signing key (public key PEM): Nitro's
    /// `public_key`, the TPM's certified key, or the key id in an SEV-SNP or TDX report_data.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Also trust this root certificate (PEM or DER; every certificate of a PEM file), e.g. a
    /// dev root or a TPM enrollment CA; the AWS Nitro root G1 is always trusted, pinned by its
    /// SHA-256 (the document carries it). A certificate with a pinned vendor root's subject or key that is not that root
    /// is refused.
    #[arg(long)]
    pub trust_root: Vec<PathBuf>,
    /// Check the chain at this time (RFC 3339) instead of the document's own timestamp (for
    /// SEV-SNP reports and TPM evidence, which carry none, the default is now).
    #[arg(long, default_value = "doc")]
    pub at: String,
    /// Accept debug-mode enclaves and guests.
    #[arg(long)]
    pub allow_debug: bool,
    /// SEV-SNP: the VCEK certificate (DER or PEM) of the chip that signed the report.
    #[arg(long)]
    pub vcek: Option<PathBuf>,
    /// SEV-SNP: AMD's ARK and ASK (PEM), as AMD's key server serves them (e.g.
    /// https://kdsintf.amd.com/vcek/v1/Milan/cert_chain); the ARK must match its pinned SHA-256.
    #[arg(long)]
    pub amd_chain: Option<PathBuf>,
    /// TDX: evaluate the TCB status with Intel's collateral saved in DIR: tcb_info.json and
    /// qe_identity.json (PCS responses), tcb_info_issuer_chain.pem (the TCB-Info-Issuer-Chain
    /// header, PEM or URL-encoded), optionally qe_identity_issuer_chain.pem, and optionally both
    /// pck_crl.der and root_ca_crl.der (DER or PEM) to check the chains for revocation.
    #[arg(long, value_name = "DIR")]
    pub collateral: Option<PathBuf>,
    /// TDX: accept a TCB status of OutOfDate or OutOfDateConfigurationNeeded (with a warning).
    #[arg(long)]
    pub allow_outdated_tcb: bool,
    /// TDX: accept a TCB status of Revoked (with a warning).
    #[arg(long)]
    pub allow_revoked_tcb: bool,
    #[arg(long)]
    pub json: bool,
}

/// A TDX DCAP quote begins: version 4, ECDSA P-256 attestation key, TEE type 0x81.
const TDX_V4_PREFIX: [u8; 8] = [4, 0, 2, 0, 0x81, 0, 0, 0];

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf).context("cannot read stdin")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

pub fn run(command: &AttestCommand) -> anyhow::Result<ExitCode> {
    let AttestCommand::Verify(args) = command;
    let raw = read(&args.document)?;
    let at = match args.at.as_str() {
        "doc" => None,
        text => {
            let nanos = parse_rfc3339(text).context("--at")?;
            Some(u64::try_from(nanos.div_euclid(1_000_000_000)).context("--at: before 1970")?)
        }
    };
    if args.collateral.is_some() && !raw.starts_with(&TDX_V4_PREFIX) {
        bail!("--collateral is Intel's TCB collateral, for TDX quotes only");
    }
    let key = match &args.key {
        Some(path) => Some(teelog_trust::public_key(path)?),
        None => None,
    };
    let report = if raw.len() == REPORT_LEN {
        let Some(vcek_path) = &args.vcek else {
            bail!("this looks like an SEV-SNP report: give the chip's VCEK with --vcek");
        };
        let vcek = teelog_trust::certificate(vcek_path)?;
        let Some(chain_path) = &args.amd_chain else {
            bail!(
                "this looks like an SEV-SNP report: give AMD's ARK and ASK with --amd-chain FILE (the cert_chain AMD's key server serves for the chip's product, e.g. https://kdsintf.amd.com/vcek/v1/Milan/cert_chain); a report carries no certificates, and teelog ships none"
            );
        };
        let chain = teelog_trust::amd_chain(chain_path)?;
        let outcome = SnpReport::parse(&raw)
            .and_then(|r| r.verify(&vcek, &chain, at.unwrap_or_else(now_seconds), args.allow_debug));
        Report::snp(&outcome)
    } else if raw.starts_with(&TDX_V4_PREFIX) {
        let at = at.unwrap_or_else(now_seconds);
        let collateral = args.collateral.as_deref().map(CollateralDir::read).transpose()?;
        let policy =
            TcbPolicy { allow_out_of_date: args.allow_outdated_tcb, allow_revoked: args.allow_revoked_tcb };
        let outcome = TdxQuote::parse(&raw).and_then(|q| q.verify(at, args.allow_debug)).and_then(|quote| {
            let Some(collateral) = &collateral else { return Ok((quote, None)) };
            // Intel's collateral must chain to the pinned root the quote carried.
            let tcb = TdxCollateral::parse(collateral.files())
                .and_then(|c| c.verify(quote.root_der(), at))
                .and_then(|c| c.evaluate(&quote))?;
            tcb.check(policy)?;
            Ok((quote, Some(tcb)))
        });
        Report::tdx(&outcome)
    } else {
        let roots = teelog_trust::trust_roots(&args.trust_root)?;
        let bytes = decode_document(&raw);
        if bytes.as_ref().is_ok_and(|b| b.first().is_some_and(|&f| teelog_attest::is_cbor_map(f))) {
            let at = at.unwrap_or_else(now_seconds);
            let outcome = bytes.and_then(|b| TpmBundle::parse(&b)).and_then(|b| b.verify(&roots, at));
            Report::tpm(&outcome, at)
        } else {
            let outcome = bytes
                .and_then(|bytes| NitroDocument::parse(&bytes))
                .and_then(|doc| doc.verify(&roots, at, args.allow_debug));
            Report::nitro(&outcome)
        }
    };
    let report = match &key {
        Some(key) => report.requiring_key(key),
        None => report,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print();
    }
    Ok(if report.verified { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Reports without a time of their own are checked now, by default.
pub fn now_seconds() -> u64 {
    u64::try_from(crate::sign::now().div_euclid(1_000_000_000)).unwrap_or(0)
}

/// A trust basis in words, for the text report.
fn trust_text(basis: TrustBasis) -> &'static str {
    match basis {
        TrustBasis::PinnedVendorRoot => "a vendor root pinned in teelog",
        TrustBasis::DevRoot => "a dev root given with --trust-root (not hardware-backed)",
        TrustBasis::TpmEnrollmentCa => "a TPM enrollment CA given with --trust-root",
        TrustBasis::BarePublicKey => "a public key given with --pubkey",
    }
}

#[derive(Serialize, Default)]
struct Report {
    verified: bool,
    error: Option<String>,
    platform: Option<&'static str>,
    /// The code measurement teelog puts in batch headers (Nitro PCR0; SNP MEASUREMENT).
    measurement: Option<String>,
    /// When the chain was checked.
    checked_at: Option<String>,
    /// Key id of the teelog signing key the document binds, where it binds one.
    bound_key_id: Option<String>,
    /// SHA-256 of the pinned root the chain reached.
    root_sha256: Option<String>,
    /// What trust in the document rests on: the kind of that root.
    trust: Option<TrustBasis>,
    debug_mode: bool,
    pcrs: BTreeMap<u64, String>,
    /// Platform-specific fields, as text.
    details: BTreeMap<&'static str, String>,
    /// What was accepted with a reservation (a TDX TCB status other than UpToDate).
    warnings: Vec<String>,
}

fn time_text(seconds: u64, per: i64) -> String {
    format_rfc3339(i64::try_from(seconds).unwrap_or(i64::MAX).saturating_mul(per))
}

impl Report {
    fn rejected(e: &AttestError) -> Self {
        Report { error: Some(e.to_string()), ..Report::default() }
    }

    /// A verified document that binds another key than `key` (or none) is rejected.
    fn requiring_key(mut self, key: &PublicKey) -> Self {
        if self.verified && self.bound_key_id.as_deref() != Some(key.id_hex().as_str()) {
            self.verified = false;
            self.error = Some(match &self.bound_key_id {
                Some(bound) => {
                    format!("the document binds key id {bound}, not the given key ({})", key.id_hex())
                }
                None => format!("the document binds no key, not the given key ({})", key.id_hex()),
            });
        }
        self
    }

    /// SEV-SNP and TDX reports bind a key by id in report_data (docs/FORMAT.md §7a).
    fn report_data_binding(&mut self, report_data: &[u8; 64]) {
        let binding = teelog_attest::ReportDataBinding::of(report_data);
        self.bound_key_id = Some(hex::encode(binding.key_id));
        if let Some(head) = binding.previous_head {
            self.details.insert("previous_head", hex::encode(head));
        }
    }

    fn nitro(outcome: &Result<NitroVerified, AttestError>) -> Self {
        let v = match outcome {
            Err(e) => return Self::rejected(e),
            Ok(v) => v,
        };
        let d = &v.document;
        let mut details = BTreeMap::from([
            ("module_id", d.module_id.clone()),
            ("timestamp", time_text(d.timestamp_ms, 1_000_000)),
        ]);
        for (name, value) in [("public_key", &d.public_key), ("user_data", &d.user_data), ("nonce", &d.nonce)]
        {
            if let Some(value) = value {
                details.insert(name, hex::encode(value));
            }
        }
        Report {
            verified: true,
            platform: Some(if v.dev { "dev (not hardware-backed)" } else { "aws-nitro" }),
            measurement: d.pcrs.get(&0).map(hex::encode),
            checked_at: Some(time_text(v.checked_at, 1_000_000_000)),
            bound_key_id: d
                .public_key
                .as_deref()
                .and_then(|k| PublicKey::from_spki_der(k).ok())
                .map(|k| k.id_hex()),
            root_sha256: Some(hex::encode(v.root_sha256)),
            trust: Some(v.basis()),
            debug_mode: v.debug_mode,
            pcrs: d.pcrs.iter().map(|(i, v)| (*i, hex::encode(v))).collect(),
            details,
            warnings: Vec::new(),
            error: None,
        }
    }

    fn tpm(outcome: &Result<TpmBundleVerified, AttestError>, at: u64) -> Self {
        let v = match outcome {
            Err(e) => return Self::rejected(e),
            Ok(v) => &v.evidence,
        };
        let mut details = BTreeMap::from([("attestation_key_id", v.ak.id_hex())]);
        if !v.qualifying_data.is_empty() {
            details.insert("qualifying_data", hex::encode(&v.qualifying_data));
        }
        Report {
            verified: true,
            platform: Some("tpm"),
            measurement: Some(hex::encode(v.measurement)),
            checked_at: Some(time_text(at, 1_000_000_000)),
            bound_key_id: Some(v.key.id_hex()),
            root_sha256: outcome.as_ref().ok().map(|v| hex::encode(v.root_sha256)),
            trust: Some(TrustBasis::TpmEnrollmentCa),
            details,
            ..Report::default()
        }
    }

    fn snp(outcome: &Result<SnpVerified, AttestError>) -> Self {
        let v = match outcome {
            Err(e) => return Self::rejected(e),
            Ok(v) => v,
        };
        let r = &v.report;
        let tcb = r.reported_tcb;
        let mut report = Report {
            verified: true,
            platform: Some("amd-sev-snp"),
            measurement: Some(hex::encode(r.measurement)),
            checked_at: Some(time_text(v.checked_at, 1_000_000_000)),
            bound_key_id: None,
            root_sha256: Some(hex::encode(v.ark_sha256)),
            trust: Some(TrustBasis::PinnedVendorRoot),
            debug_mode: r.debug_allowed(),
            pcrs: BTreeMap::new(),
            details: BTreeMap::from([
                ("version", r.version.to_string()),
                ("policy", format!("{:#x}", r.policy)),
                ("vmpl", r.vmpl.to_string()),
                ("guest_svn", r.guest_svn.to_string()),
                ("report_data", hex::encode(r.report_data)),
                ("host_data", hex::encode(r.host_data)),
                ("chip_id", hex::encode(r.chip_id)),
                (
                    "reported_tcb",
                    format!(
                        "bootloader {} tee {} snp {} microcode {}",
                        tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode
                    ),
                ),
            ]),
            warnings: Vec::new(),
            error: None,
        };
        report.report_data_binding(&r.report_data);
        report
    }

    fn tdx(outcome: &Result<(TdxVerified, Option<TcbEvaluation>), AttestError>) -> Self {
        let (v, tcb) = match outcome {
            Err(e) => return Self::rejected(e),
            Ok(v) => v,
        };
        let q = &v.quote;
        let mut details = BTreeMap::from([
            ("td_attributes", hex::encode(q.td_attributes)),
            ("mrconfigid", hex::encode(q.mrconfigid)),
            ("report_data", hex::encode(q.report_data)),
            ("tee_tcb_svn", hex::encode(q.tee_tcb_svn)),
        ]);
        for (name, rtmr) in ["rtmr0", "rtmr1", "rtmr2", "rtmr3"].into_iter().zip(&q.rtmrs) {
            details.insert(name, hex::encode(rtmr));
        }
        let mut warnings = Vec::new();
        match tcb {
            None => {
                details.insert(
                    "tcb_status",
                    "not evaluated: pass --collateral DIR with Intel's TCB info and QE identity".into(),
                );
            }
            Some(tcb) => {
                details.insert("tcb_status", tcb.status.name().into());
                let module = tcb.module_status.map_or("none (TDX 1.0)", TcbStatus::name);
                details.insert(
                    "tcb_statuses",
                    format!("platform {}, TDX module {module}, QE {}", tcb.platform_status, tcb.qe_status),
                );
                details.insert("tcb_date", time_text(tcb.tcb_date, 1_000_000_000));
                details.insert(
                    "advisories",
                    if tcb.advisory_ids.is_empty() { "none".into() } else { tcb.advisory_ids.join(", ") },
                );
                details.insert("tcb_eval_num", tcb.tcb_evaluation_data_number.to_string());
                details.insert("fmspc", hex::encode_upper(tcb.fmspc));
                let crls = if tcb.crls_checked { "checked" } else { "not given: PCK revocation not checked" };
                details.insert("crls", crls.into());
                details.insert("tcb_valid_to", time_text(tcb.collateral_next_update, 1_000_000_000));
                if let Some(warning) = tcb.status.warning() {
                    warnings.push(format!("TCB status {}: {warning}", tcb.status));
                }
            }
        }
        let mut report = Report {
            verified: true,
            platform: Some("intel-tdx"),
            measurement: Some(hex::encode(q.mrtd)),
            checked_at: Some(time_text(v.checked_at, 1_000_000_000)),
            bound_key_id: None,
            root_sha256: Some(hex::encode(v.root_sha256)),
            trust: Some(TrustBasis::PinnedVendorRoot),
            debug_mode: q.debug(),
            pcrs: BTreeMap::new(),
            details,
            warnings,
            error: None,
        };
        report.report_data_binding(&q.report_data);
        report
    }

    fn print(&self) {
        if let Some(error) = &self.error {
            println!("REJECTED: {error}");
            return;
        }
        let line = |name: &str, value: &str| println!("{name:<13} {value}");
        println!("VERIFIED");
        for (name, value) in [
            ("platform", self.platform.map(str::to_string)),
            ("measurement", self.measurement.clone()),
            ("checked at", self.checked_at.clone()),
            ("root sha256", self.root_sha256.clone()),
            ("trust", self.trust.map(|t| trust_text(t).to_string())),
            ("bound key", self.bound_key_id.clone()),
        ] {
            if let Some(value) = value {
                line(name, &value);
            }
        }
        for (name, value) in &self.details {
            line(name, value);
        }
        for (index, value) in &self.pcrs {
            line(&format!("PCR{index}"), value);
        }
        if self.debug_mode {
            println!("WARNING: debug mode (the host can read this TEE's memory), accepted because of --allow-debug");
        }
        if self.platform.is_some_and(|p| p.starts_with("dev")) {
            println!("WARNING: this chain ends at a dev root given with --trust-root, not at AWS");
        }
        for warning in &self.warnings {
            println!("WARNING: {warning}");
        }
    }
}
