//! `teelog attest verify`: its arguments, and what a document proves in text or JSON. The
//! verification is `teelog_attest::document`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::Serialize;
use teelog_attest::document::{Inputs, Kind, Verified};
use teelog_attest::nitro::NitroVerified;
use teelog_attest::snp::SnpVerified;
use teelog_attest::tcb::{TcbEvaluation, TcbPolicy, TcbStatus};
use teelog_attest::tdx::TdxVerified;
use teelog_attest::tpm::bundle::TpmBundleVerified;
use teelog_attest::AttestError;
use teelog_core::timestamp::{format_rfc3339, parse_rfc3339};
use teelog_core::verify::TrustBasis;
use teelog_trust::CollateralDir;

#[derive(clap::Subcommand, Clone)]
pub enum AttestCommand {
    /// Verify an attestation document: an AWS Nitro (or dev) document or a TPM evidence bundle
    /// as raw CBOR, base64 or hex, an AMD SEV-SNP report (1184 bytes, with --vcek and
    /// --amd-chain), or an Intel TDX DCAP v4 quote.
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
    // This doc comment is clap's help text, which renders no markdown: the URL stays bare there.
    #[allow(rustdoc::bare_urls)]
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
    let key = args.key.as_deref().map(teelog_trust::public_key).transpose()?;
    let kind = Kind::of(&raw);
    if args.collateral.is_some() && kind != Kind::Tdx {
        bail!("--collateral is Intel's TCB collateral, for TDX quotes only");
    }
    let sev_snp = match (kind, &args.vcek, &args.amd_chain) {
        (Kind::SevSnp, None, _) => bail!("this looks like an SEV-SNP report: give the chip's VCEK with --vcek"),
        (Kind::SevSnp, _, None) => bail!(
            "this looks like an SEV-SNP report: give AMD's ARK and ASK with --amd-chain FILE (the cert_chain AMD's key server serves for the chip's product, e.g. https://kdsintf.amd.com/vcek/v1/Milan/cert_chain); a report carries no certificates, and teelog ships none"
        ),
        (Kind::SevSnp, Some(vcek), Some(chain)) => {
            Some((teelog_trust::certificate(vcek)?, teelog_trust::amd_chain(chain)?))
        }
        _ => None,
    };
    let collateral = args.collateral.as_deref().map(CollateralDir::read).transpose()?;
    let policy =
        TcbPolicy { allow_out_of_date: args.allow_outdated_tcb, allow_revoked: args.allow_revoked_tcb };
    let roots = teelog_trust::trust_roots(&args.trust_root)?;
    let inputs = Inputs {
        roots: &roots,
        at,
        now: now_seconds(),
        allow_debug: args.allow_debug,
        sev_snp: sev_snp.as_ref().map(|(vcek, chain)| (vcek.as_slice(), chain)),
        collateral: collateral.as_ref().map(|c| (c.files(), policy)),
    };
    let report = match teelog_attest::document::verify(&raw, &inputs) {
        Err(e) => Report::rejected(&e),
        Ok(verified) => {
            let mut report = Report::of(&verified);
            if let Some(Err(e)) = key.as_ref().map(|key| verified.require_key(key)) {
                report.verified = false;
                report.error = Some(e.to_string());
            }
            report
        }
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

    fn of(verified: &Verified) -> Self {
        let mut report = match verified {
            Verified::Nitro(v) => Self::nitro(v),
            Verified::Tpm { bundle, checked_at } => Self::tpm(bundle, *checked_at),
            Verified::SevSnp(v) => Self::snp(v),
            Verified::Tdx { quote, tcb } => Self::tdx(quote, tcb.as_ref()),
        };
        report.bound_key_id = verified.bound_key_id().map(hex::encode);
        report
    }

    /// SEV-SNP and TDX reports name the previous epoch's head in report_data (docs/FORMAT.md §7a).
    fn previous_head(&mut self, report_data: &[u8; 64]) {
        if let Some(head) = teelog_attest::ReportDataBinding::of(report_data).previous_head {
            self.details.insert("previous_head", hex::encode(head));
        }
    }

    fn nitro(v: &NitroVerified) -> Self {
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
            bound_key_id: None,
            root_sha256: Some(hex::encode(v.root_sha256)),
            trust: Some(v.basis()),
            debug_mode: v.debug_mode,
            pcrs: d.pcrs.iter().map(|(i, v)| (*i, hex::encode(v))).collect(),
            details,
            warnings: Vec::new(),
            error: None,
        }
    }

    fn tpm(bundle: &TpmBundleVerified, at: u64) -> Self {
        let v = &bundle.evidence;
        let mut details = BTreeMap::from([("attestation_key_id", v.ak.id_hex())]);
        if !v.qualifying_data.is_empty() {
            details.insert("qualifying_data", hex::encode(&v.qualifying_data));
        }
        Report {
            verified: true,
            platform: Some("tpm"),
            measurement: Some(hex::encode(v.measurement)),
            checked_at: Some(time_text(at, 1_000_000_000)),
            root_sha256: Some(hex::encode(bundle.root_sha256)),
            trust: Some(TrustBasis::TpmEnrollmentCa),
            details,
            ..Report::default()
        }
    }

    fn snp(v: &SnpVerified) -> Self {
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
        report.previous_head(&r.report_data);
        report
    }

    fn tdx(v: &TdxVerified, tcb: Option<&TcbEvaluation>) -> Self {
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
        report.previous_head(&q.report_data);
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
