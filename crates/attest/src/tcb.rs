//! Intel's TCB collateral for TDX quotes, checked offline: the TCB Info (`id` "TDX", version 3)
//! and the QE Identity (`id` "TD_QE", version 2) exactly as the Intel PCS serves them
//! (`{"tcbInfo":{...},"signature":"<hex>"}`, `{"enclaveIdentity":{...},"signature":"<hex>"}`),
//! each signed with ECDSA P-256 over the bytes of its inner object by the Intel SGX TCB Signing
//! certificate, whose issuer chain (the `TCB-Info-Issuer-Chain` and
//! `SGX-Enclave-Identity-Issuer-Chain` headers, PEM or still URL-encoded) must reach the pinned
//! Intel SGX Root CA.
//!
//! The evaluation follows Intel's quote verification library for TDX: the PCK certificate's
//! FMSPC and PCE-ID select the TCB Info; its SGX TCB components and PCESVN, then the quote's
//! TEE_TCB_SVN, select the first TCB level they meet; the TDX module's identity and TCB level
//! and the QE report's identity and ISVSVN may lower the status (`converge`).

use std::fmt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use teelog_core::crypto::p1363_to_der;
use teelog_core::merkle::Digest;
use teelog_core::timestamp::parse_rfc3339;

use crate::der::{self, Der};
use crate::tdx::{pinned_intel_root, verify_intel_chain, TdxVerified};
use crate::{rfc3339, AttestError};

/// A TCB Info or QE Identity file: the PCS serves a few KiB (TCB Info grows with its levels).
pub const MAX_COLLATERAL_JSON_BYTES: usize = 256 << 10;
/// An issuer chain: two certificates, a few KiB even URL-encoded.
pub const MAX_ISSUER_CHAIN_BYTES: usize = 64 << 10;
/// A CRL: Intel's PCK CA CRLs list some thousand serial numbers.
pub const MAX_CRL_BYTES: usize = 1 << 20;

const TCB_SIGNING_CN: &str = "Intel SGX TCB Signing";
/// OID 1.2.840.113741.1.13.1, Intel's SGX extensions of PCK certificates, in DER.
const SGX_EXTENSIONS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01];

fn err(why: impl Into<String>) -> AttestError {
    AttestError::Collateral(why.into())
}

fn mismatch(why: impl Into<String>) -> AttestError {
    AttestError::TcbMismatch(why.into())
}

/// A TCB status as Intel names it in TCB Info, TDX module and QE Identity levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TcbStatus {
    /// Patched to the latest level Intel lists.
    UpToDate,
    /// Patched, but software mitigations are needed that the quote cannot show.
    #[serde(rename = "SWHardeningNeeded")]
    SwHardeningNeeded,
    /// Patched, but the platform's configuration (e.g. BIOS settings) needs changes.
    ConfigurationNeeded,
    /// Both of the above.
    #[serde(rename = "ConfigurationAndSWHardeningNeeded")]
    ConfigurationAndSwHardeningNeeded,
    /// Below the latest level: known vulnerabilities are unpatched.
    OutOfDate,
    /// Out of date, and the configuration needs changes too.
    OutOfDateConfigurationNeeded,
    /// The level's keys are revoked: its quotes prove nothing.
    Revoked,
}

impl TcbStatus {
    /// Intel's spelling of the status.
    pub fn name(self) -> &'static str {
        match self {
            Self::UpToDate => "UpToDate",
            Self::SwHardeningNeeded => "SWHardeningNeeded",
            Self::ConfigurationNeeded => "ConfigurationNeeded",
            Self::ConfigurationAndSwHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            Self::OutOfDate => "OutOfDate",
            Self::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            Self::Revoked => "Revoked",
        }
    }

    /// What an accepted status other than UpToDate leaves to the platform's owner.
    pub fn warning(self) -> Option<&'static str> {
        match self {
            Self::UpToDate => None,
            Self::SwHardeningNeeded | Self::ConfigurationAndSwHardeningNeeded => Some(
                "the platform is patched, but its protection depends on software mitigations of the advisories",
            ),
            Self::ConfigurationNeeded => Some("the platform is patched but needs a BIOS or configuration change"),
            Self::OutOfDate | Self::OutOfDateConfigurationNeeded => {
                Some("the platform's TCB is out of date: it lacks security patches")
            }
            Self::Revoked => Some("the platform's TCB is revoked: its keys are known to be compromised"),
        }
    }

    /// The `teelog attest verify` flag that accepts a refused status.
    pub(crate) fn allow_flag(self) -> &'static str {
        match self {
            Self::Revoked => "--allow-revoked-tcb",
            _ => "--allow-outdated-tcb",
        }
    }

    /// Intel's convergence of a TCB level's status with a TDX module's or QE's (which are
    /// UpToDate, OutOfDate or Revoked): the worse of the two, keeping a configuration need.
    fn converge(self, other: TcbStatus) -> TcbStatus {
        match (other, self) {
            (Self::Revoked, _) => Self::Revoked,
            (Self::OutOfDate, Self::UpToDate | Self::SwHardeningNeeded) => Self::OutOfDate,
            (Self::OutOfDate, Self::ConfigurationNeeded | Self::ConfigurationAndSwHardeningNeeded) => {
                Self::OutOfDateConfigurationNeeded
            }
            _ => self,
        }
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which statuses a caller accepts beyond UpToDate, SWHardeningNeeded and ConfigurationNeeded
/// (always accepted, with a warning).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcbPolicy {
    /// Accept OutOfDate and OutOfDateConfigurationNeeded.
    pub allow_out_of_date: bool,
    /// Accept Revoked (for diagnosis only: such a quote proves nothing).
    pub allow_revoked: bool,
}

/// `N` bytes as hex text (either case).
#[derive(Debug, Clone, Copy)]
struct Hex<const N: usize>([u8; N]);

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&text, &mut out)
            .map_err(|_| D::Error::custom(format!("{text:?} is not {N} bytes of hex")))?;
        Ok(Hex(out))
    }
}

/// An RFC 3339 time, as Unix seconds.
#[derive(Debug, Clone, Copy)]
struct Time(u64);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let nanos = parse_rfc3339(&text).map_err(D::Error::custom)?;
        u64::try_from(nanos.div_euclid(1_000_000_000))
            .map(Time)
            .map_err(|_| D::Error::custom(format!("{text} is before 1970")))
    }
}

/// The PCS response: the signed object under its name, and the signature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(rename = "tcbInfo", borrow, default)]
    tcb_info: Option<&'a RawValue>,
    #[serde(rename = "enclaveIdentity", borrow, default)]
    enclave_identity: Option<&'a RawValue>,
    signature: Hex<64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbInfo {
    id: String,
    version: u32,
    issue_date: Time,
    next_update: Time,
    fmspc: Hex<6>,
    pce_id: Hex<2>,
    tcb_type: u32,
    tcb_evaluation_data_number: u32,
    tdx_module: Module,
    #[serde(default)]
    tdx_module_identities: Vec<Module>,
    tcb_levels: Vec<TcbLevel>,
}

/// `tdxModule` (no id, no levels) or an entry of `tdxModuleIdentities`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Module {
    #[serde(default)]
    id: String,
    mrsigner: Hex<48>,
    attributes: Hex<8>,
    attributes_mask: Hex<8>,
    #[serde(default)]
    tcb_levels: Vec<IsvLevel>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbLevel {
    tcb: Tcb,
    tcb_date: Time,
    tcb_status: TcbStatus,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Tcb {
    sgxtcbcomponents: [Svn; 16],
    pcesvn: u16,
    tdxtcbcomponents: [Svn; 16],
}

#[derive(Debug, Deserialize)]
struct Svn {
    svn: u8,
}

/// A level of a TDX module identity or of the QE identity.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IsvLevel {
    tcb: IsvSvn,
    tcb_status: TcbStatus,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct IsvSvn {
    isvsvn: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QeIdentity {
    id: String,
    version: u32,
    issue_date: Time,
    next_update: Time,
    miscselect: Hex<4>,
    miscselect_mask: Hex<4>,
    attributes: Hex<16>,
    attributes_mask: Hex<16>,
    mrsigner: Hex<32>,
    isvprodid: u16,
    tcb_levels: Vec<IsvLevel>,
}

/// The two signed documents, by the name of their object in the PCS response.
#[derive(Clone, Copy)]
enum Kind {
    TcbInfo,
    QeIdentity,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::TcbInfo => "tcbInfo",
            Kind::QeIdentity => "enclaveIdentity",
        }
    }

    /// The id and version that describe a TDX platform.
    fn expected(self) -> (&'static str, u32) {
        match self {
            Kind::TcbInfo => ("TDX", 3),
            Kind::QeIdentity => ("TD_QE", 2),
        }
    }
}

/// What both documents have: id, version, issueDate and nextUpdate.
trait Header {
    fn header(&self) -> (&str, u32, Time, Time);
}

impl Header for TcbInfo {
    fn header(&self) -> (&str, u32, Time, Time) {
        (&self.id, self.version, self.issue_date, self.next_update)
    }
}

impl Header for QeIdentity {
    fn header(&self) -> (&str, u32, Time, Time) {
        (&self.id, self.version, self.issue_date, self.next_update)
    }
}

/// One signed collateral document, parsed; `body` is the signed inner object as it appeared.
#[derive(Debug)]
struct Signed<T> {
    body: Vec<u8>,
    signature: [u8; 64],
    chain: Vec<Vec<u8>>,
    value: T,
    issue_date: u64,
    next_update: u64,
}

/// The files an auditor saves from the PCS: each JSON response and the issuer chain header that
/// came with it.
#[derive(Debug, Clone, Copy)]
pub struct CollateralFiles<'a> {
    /// The PCS's TCB info response (JSON), at most [`MAX_COLLATERAL_JSON_BYTES`].
    pub tcb_info: &'a [u8],
    /// The issuer chain the PCS sent with it (PEM), at most [`MAX_ISSUER_CHAIN_BYTES`].
    pub tcb_info_issuer_chain: &'a [u8],
    /// The PCS's QE identity response (JSON), at most [`MAX_COLLATERAL_JSON_BYTES`].
    pub qe_identity: &'a [u8],
    /// The issuer chain the PCS sent with it (PEM), at most [`MAX_ISSUER_CHAIN_BYTES`].
    pub qe_identity_issuer_chain: &'a [u8],
    /// The CRLs of the PCK CA that issued the quote's PCK certificate and of the Intel SGX Root
    /// CA (DER or PEM): both, or neither to leave revocation unchecked.
    pub pck_crl: Option<&'a [u8]>,
    /// The Intel SGX Root CA's CRL; see `pck_crl`.
    pub root_ca_crl: Option<&'a [u8]>,
}

/// TDX collateral, parsed and checked for shape; signatures not yet verified.
#[derive(Debug)]
pub struct TdxCollateral {
    tcb_info: Signed<TcbInfo>,
    qe_identity: Signed<QeIdentity>,
    /// DER of the PCK CA's and the root CA's CRLs, or empty.
    crls: Vec<Vec<u8>>,
}

/// Collateral whose signatures, chains and validity were verified at `checked_at`.
#[derive(Debug)]
pub struct VerifiedCollateral {
    collateral: TdxCollateral,
    root_der: Vec<u8>,
    /// SHA-256 of the root both issuer chains ended at: the quote's own root.
    pub root_sha256: Digest,
    /// When it was verified (Unix seconds).
    pub checked_at: u64,
}

/// The outcome of matching a quote against verified collateral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcbEvaluation {
    /// The converged status, the one policy applies to.
    pub status: TcbStatus,
    /// The status of the TCB level the platform and the TDX module's SVNs meet.
    pub platform_status: TcbStatus,
    /// The TDX module identity's status (TDX 1.5 and later; 1.0 modules have none).
    pub module_status: Option<TcbStatus>,
    /// The quoting enclave's status per the QE identity.
    pub qe_status: TcbStatus,
    /// Intel security advisories of the matched levels, without repeats.
    pub advisory_ids: Vec<String>,
    /// The date of the matched TCB level (Unix seconds).
    pub tcb_date: u64,
    /// The platform family and model, from the PCK certificate; the TCB info is for it.
    pub fmspc: [u8; 6],
    /// The collateral's TCB evaluation data number: higher is newer.
    pub tcb_evaluation_data_number: u32,
    /// The earlier `nextUpdate` of the two documents (Unix seconds).
    pub collateral_next_update: u64,
    /// Whether the PCK and TCB Signing chains were checked against CRLs.
    pub crls_checked: bool,
}

impl TcbEvaluation {
    /// Applies `policy`: OutOfDate (with or without a configuration need) and Revoked are refused
    /// unless allowed.
    pub fn check(&self, policy: TcbPolicy) -> Result<(), AttestError> {
        let allowed = match self.status {
            TcbStatus::OutOfDate | TcbStatus::OutOfDateConfigurationNeeded => policy.allow_out_of_date,
            TcbStatus::Revoked => policy.allow_revoked,
            _ => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(AttestError::TcbRefused { status: self.status, advisory_ids: self.advisory_ids.join(", ") })
        }
    }
}

/// A CRL as DER or PEM, checked to parse.
fn parse_crl(bytes: &[u8], what: &str) -> Result<Vec<u8>, AttestError> {
    if bytes.len() > MAX_CRL_BYTES {
        return Err(AttestError::TooLarge { len: bytes.len(), max: MAX_CRL_BYTES });
    }
    let der = match rustls_pki_types::CertificateRevocationListDer::from_pem_slice(bytes) {
        Ok(der) => der.to_vec(),
        Err(_) => bytes.to_vec(),
    };
    webpki::BorrowedCertRevocationList::from_der(&der)
        .map_err(|e| err(format!("{what}: not a CRL ({e:?})")))?;
    Ok(der)
}

/// The issuer chain as PEM, or as the URL-encoded header value the PCS sends.
fn parse_chain(bytes: &[u8], what: &str) -> Result<Vec<Vec<u8>>, AttestError> {
    if bytes.len() > MAX_ISSUER_CHAIN_BYTES {
        return Err(AttestError::TooLarge { len: bytes.len(), max: MAX_ISSUER_CHAIN_BYTES });
    }
    let pem = if bytes.contains(&b'%') { percent_decode(bytes, what)? } else { bytes.to_vec() };
    let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("{what}: {e}")))?;
    if chain.is_empty() {
        return Err(err(format!("{what}: no PEM certificate")));
    }
    Ok(chain)
}

fn percent_decode(bytes: &[u8], what: &str) -> Result<Vec<u8>, AttestError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'%' {
            out.push(b);
            continue;
        }
        let mut byte = [0u8];
        let digits = rest.get(..2).ok_or_else(|| err(format!("{what}: truncated %-escape")))?;
        hex::decode_to_slice(digits, &mut byte).map_err(|_| err(format!("{what}: bad %-escape")))?;
        out.push(byte[0]);
        rest = &rest[2..];
    }
    Ok(out)
}

/// A PCS response of `kind`: the exact bytes of its signed object, parsed, and the signature.
fn parse_signed<T: for<'de> Deserialize<'de> + Header>(
    kind: Kind,
    json: &[u8],
    chain: &[u8],
) -> Result<Signed<T>, AttestError> {
    let name = kind.name();
    if json.len() > MAX_COLLATERAL_JSON_BYTES {
        return Err(AttestError::TooLarge { len: json.len(), max: MAX_COLLATERAL_JSON_BYTES });
    }
    let envelope: Envelope<'_> = serde_json::from_slice(json).map_err(|e| {
        err(format!("not a PCS response {{\"{name}\":{{...}},\"signature\":\"<hex>\"}}: {e}"))
    })?;
    let body = match kind {
        Kind::TcbInfo => envelope.tcb_info.filter(|_| envelope.enclave_identity.is_none()),
        Kind::QeIdentity => envelope.enclave_identity.filter(|_| envelope.tcb_info.is_none()),
    };
    let body =
        body.ok_or_else(|| err(format!("expected a PCS response with \"{name}\" and its signature")))?;
    let value: T = serde_json::from_str(body.get()).map_err(|e| err(format!("{name}: {e}")))?;
    let (id, version, issue_date, next_update) = value.header();
    let (want_id, want_version) = kind.expected();
    if (id, version) != (want_id, want_version) {
        return Err(err(format!(
            "{name} has id {id:?} version {version}; a TDX quote needs id {want_id:?} version {want_version}"
        )));
    }
    let (issue_date, next_update) = (issue_date.0, next_update.0);
    let chain = parse_chain(chain, &format!("{name} issuer chain"))?;
    Ok(Signed {
        body: body.get().as_bytes().to_vec(),
        signature: envelope.signature.0,
        chain,
        value,
        issue_date,
        next_update,
    })
}

impl TdxCollateral {
    /// Parses the files and checks their size limits and shape (TCB info `TDX` version 3, QE
    /// identity `TD_QE` version 2); signatures and chains are checked by `verify`.
    pub fn parse(files: CollateralFiles<'_>) -> Result<Self, AttestError> {
        let tcb_info: Signed<TcbInfo> =
            parse_signed(Kind::TcbInfo, files.tcb_info, files.tcb_info_issuer_chain)?;
        // Type 0 is the only TCB type Intel defines: components compared one by one.
        if tcb_info.value.tcb_type != 0 {
            return Err(err(format!("tcbInfo has tcbType {}; only 0 is defined", tcb_info.value.tcb_type)));
        }
        if tcb_info.value.tcb_levels.is_empty() {
            return Err(err("tcbInfo lists no TCB levels"));
        }
        let qe_identity: Signed<QeIdentity> =
            parse_signed(Kind::QeIdentity, files.qe_identity, files.qe_identity_issuer_chain)?;
        // Module and QE levels may only say UpToDate, OutOfDate or Revoked (what `converge` takes).
        let isv_levels = tcb_info.value.tdx_module_identities.iter().flat_map(|m| &m.tcb_levels);
        if let Some(level) = isv_levels.chain(&qe_identity.value.tcb_levels).find(|l| {
            !matches!(l.tcb_status, TcbStatus::UpToDate | TcbStatus::OutOfDate | TcbStatus::Revoked)
        }) {
            return Err(err(format!("a TDX module or QE level has status {}", level.tcb_status)));
        }
        let crls = match (files.pck_crl, files.root_ca_crl) {
            (None, None) => Vec::new(),
            (Some(pck), Some(root)) => vec![parse_crl(pck, "PCK CRL")?, parse_crl(root, "root CA CRL")?],
            _ => return Err(err("give both CRLs, the PCK CA's and the root CA's, or neither")),
        };
        Ok(TdxCollateral { tcb_info, qe_identity, crls })
    }

    /// The CRLs to check chains against (borrowed from the checked DER).
    fn crls(&self) -> Result<Vec<webpki::CertRevocationList<'_>>, AttestError> {
        self.crls
            .iter()
            .map(|der| {
                webpki::BorrowedCertRevocationList::from_der(der)
                    .map(webpki::CertRevocationList::from)
                    .map_err(|e| err(format!("CRL: {e:?}")))
            })
            .collect()
    }

    /// Verifies both signatures under the TCB Signing certificate, its chain to the pinned Intel
    /// root at `at` (Unix seconds; with CRLs, not revoked and the CRLs current), and that `at`
    /// lies within both documents' issueDate and nextUpdate.
    pub fn verify(self, root_der: &[u8], at: u64) -> Result<VerifiedCollateral, AttestError> {
        let root_sha256 = pinned_intel_root(root_der)?;
        let crls = self.crls()?;
        let crls: Vec<_> = crls.iter().collect();
        verify_signed(&self.tcb_info, Kind::TcbInfo, root_der, at, &crls)?;
        verify_signed(&self.qe_identity, Kind::QeIdentity, root_der, at, &crls)?;
        Ok(VerifiedCollateral { collateral: self, root_der: root_der.to_vec(), root_sha256, checked_at: at })
    }
}

fn verify_signed<T>(
    doc: &Signed<T>,
    kind: Kind,
    root_der: &[u8],
    at: u64,
    crls: &[&webpki::CertRevocationList<'_>],
) -> Result<(), AttestError> {
    let name = kind.name();
    let leaf_der = CertificateDer::from(doc.chain[0].as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| AttestError::Certificate(format!("the {name} signing certificate: {e}")))?;
    let below =
        verify_intel_chain(&leaf, &doc.chain[1..], root_der, at, crls, "TCB Signing ← Intel SGX Root CA")?;
    // The TCB Signing certificate is the one the pinned root itself issued with that name; a
    // certificate further down (a PCK, whose key lives in a platform) is not it, whatever its name.
    let cn = der::subject_common_name(&doc.chain[0])?;
    if cn != TCB_SIGNING_CN || below != 0 {
        return Err(err(format!(
            "{name} is signed by {cn:?} ({below} certificates below the Intel SGX Root CA), not by the {TCB_SIGNING_CN:?} certificate the root issued"
        )));
    }
    leaf.verify_signature(webpki::ring::ECDSA_P256_SHA256, &doc.body, &p1363_to_der(&doc.signature))
        .map_err(|_| {
            err(format!("the {name} signature does not verify under the TCB Signing certificate"))
        })?;
    if at < doc.issue_date || at > doc.next_update {
        return Err(err(format!(
            "{name} is valid from {} to its nextUpdate {}, not at {}",
            rfc3339(doc.issue_date),
            rfc3339(doc.next_update),
            rfc3339(at)
        )));
    }
    Ok(())
}

/// What the PCK certificate says of the platform (its SGX extensions).
struct PckTcb {
    fmspc: [u8; 6],
    pce_id: [u8; 2],
    sgx_components: [u8; 16],
    pcesvn: u16,
}

impl PckTcb {
    fn from_certificate(pck_der: &[u8]) -> Result<Self, AttestError> {
        let ext = der::extension(pck_der, SGX_EXTENSIONS)?.ok_or_else(|| bad("missing"))?;
        let (mut fmspc, mut pce_id, mut tcb) = (None, None, None);
        let mut entries = Der::new(Der::new(ext).expect(der::SEQUENCE, "SGX extensions")?);
        while !entries.is_empty() {
            let mut entry = Der::new(entries.expect(der::SEQUENCE, "SGX extension")?);
            let oid = entry.expect(der::OID, "SGX extension id")?;
            let (tag, value) = entry.any()?;
            match (oid.strip_prefix(SGX_EXTENSIONS), tag) {
                (Some([2]), der::SEQUENCE) => tcb = Some(value),
                (Some([3]), der::OCTET_STRING) => pce_id = Some(value),
                (Some([4]), der::OCTET_STRING) => fmspc = Some(value),
                _ => {}
            }
        }
        let fmspc = present(fmspc, "FMSPC")?.try_into().map_err(|_| bad("FMSPC is not 6 bytes"))?;
        let pce_id = present(pce_id, "PCE-ID")?.try_into().map_err(|_| bad("PCE-ID is not 2 bytes"))?;
        // TCB: components 1..16 (INTEGERs), PCESVN (17), CPUSVN (18), each under its own OID.
        let (mut sgx_components, mut pcesvn) = ([None; 16], None);
        let mut items = Der::new(present(tcb, "TCB")?);
        while !items.is_empty() {
            let mut item = Der::new(items.expect(der::SEQUENCE, "TCB component")?);
            let oid = item.expect(der::OID, "TCB component id")?;
            match oid.strip_prefix(SGX_EXTENSIONS) {
                Some([2, n @ 1..=16]) => {
                    let svn =
                        u8::try_from(item.u16("SGX TCB component")?).map_err(|_| bad("SVN above 255"))?;
                    sgx_components[usize::from(*n) - 1] = Some(svn);
                }
                Some([2, 17]) => pcesvn = Some(item.u16("PCESVN")?),
                _ => {}
            }
        }
        let mut components = [0u8; 16];
        for (out, svn) in components.iter_mut().zip(sgx_components) {
            *out = svn.ok_or_else(|| bad("an SGX TCB component is missing"))?;
        }
        Ok(PckTcb {
            fmspc,
            pce_id,
            sgx_components: components,
            pcesvn: pcesvn.ok_or_else(|| bad("no PCESVN"))?,
        })
    }
}

fn bad(why: &str) -> AttestError {
    AttestError::Certificate(format!("the PCK certificate's SGX extensions: {why}"))
}

fn present<'a>(value: Option<&'a [u8]>, what: &str) -> Result<&'a [u8], AttestError> {
    value.ok_or_else(|| bad(&format!("no {what}")))
}

/// Appends `ids` to `all`, each once.
fn add_advisories(all: &mut Vec<String>, ids: &[String]) {
    for id in ids {
        if !all.contains(id) {
            all.push(id.clone());
        }
    }
}

impl VerifiedCollateral {
    /// Matches a verified quote against the collateral. A quote from another platform (FMSPC,
    /// PCE-ID), a TDX module or QE that Intel's identities do not describe, and SVNs below every
    /// listed level are errors; otherwise the status is returned for [`TcbEvaluation::check`].
    pub fn evaluate(&self, quote: &TdxVerified) -> Result<TcbEvaluation, AttestError> {
        let info = &self.collateral.tcb_info.value;
        let q = &quote.quote;
        let crls = self.collateral.crls()?;
        if !crls.is_empty() {
            let pck_der = CertificateDer::from(q.pck_der());
            let pck = webpki::EndEntityCert::try_from(&pck_der)
                .map_err(|e| AttestError::Certificate(format!("the PCK certificate: {e}")))?;
            q.verify_pck_chain(&pck, &self.root_der, self.checked_at, &crls.iter().collect::<Vec<_>>())?;
        }
        let pck = PckTcb::from_certificate(q.pck_der())?;
        if pck.fmspc != info.fmspc.0 {
            return Err(mismatch(format!(
                "the TCB info is for FMSPC {}, but the quote's PCK certificate is of FMSPC {} (another platform model: fetch the TCB info for that FMSPC)",
                hex::encode_upper(info.fmspc.0),
                hex::encode_upper(pck.fmspc)
            )));
        }
        if pck.pce_id != info.pce_id.0 {
            return Err(mismatch(format!(
                "the TCB info is for PCE-ID {}, the PCK certificate names {}",
                hex::encode_upper(info.pce_id.0),
                hex::encode_upper(pck.pce_id)
            )));
        }
        let svn = q.tee_tcb_svn;
        let mut advisory_ids = Vec::new();

        // The TCB level: the first whose SGX components and PCESVN the PCK certificate meets and
        // whose TDX components TEE_TCB_SVN meets. From TDX 1.5 (TEE_TCB_SVN[1] > 0) the module's
        // SVN and version (bytes 0 and 1) are judged by the module identity instead.
        let tdx_from = if svn[1] > 0 { 2 } else { 0 };
        let sgx_met = |l: &&TcbLevel| {
            l.tcb.pcesvn <= pck.pcesvn
                && l.tcb.sgxtcbcomponents.iter().zip(pck.sgx_components).all(|(c, have)| c.svn <= have)
        };
        let tdx_met = |l: &&TcbLevel| {
            l.tcb.tdxtcbcomponents.iter().zip(svn).skip(tdx_from).all(|(c, have)| c.svn <= have)
        };
        let level = info.tcb_levels.iter().filter(sgx_met).find(tdx_met).ok_or_else(|| {
            let which = if info.tcb_levels.iter().any(|l| sgx_met(&l)) {
                format!("the TD's TEE_TCB_SVN {}", hex::encode(svn))
            } else {
                format!(
                    "the platform's SGX TCB (components {}, PCESVN {})",
                    hex::encode(pck.sgx_components),
                    pck.pcesvn
                )
            };
            mismatch(format!("{which} is below every TCB level Intel lists: the TCB is not supported"))
        })?;
        add_advisories(&mut advisory_ids, &level.advisory_ids);

        // The TDX module: TDX 1.0 is described by `tdxModule`, later ones by `TDX_<version>`.
        let module = if svn[1] == 0 {
            &info.tdx_module
        } else {
            let id = format!("TDX_{:02X}", svn[1]);
            info.tdx_module_identities.iter().find(|m| m.id.eq_ignore_ascii_case(&id)).ok_or_else(|| {
                mismatch(format!("the TCB info has no identity {id} for the TD's TDX module"))
            })?
        };
        let seam_attributes: Vec<u8> =
            q.seam_attributes.iter().zip(module.attributes_mask.0).map(|(a, m)| a & m).collect();
        if q.mrsignerseam != module.mrsigner.0 || seam_attributes != module.attributes.0 {
            return Err(mismatch(format!(
                "the TDX module (MRSIGNERSEAM {}, SEAM attributes {}) is not the one Intel's TCB info describes",
                hex::encode(q.mrsignerseam),
                hex::encode(q.seam_attributes)
            )));
        }
        let module_status = if svn[1] == 0 {
            None
        } else {
            let level = isv_level(&module.tcb_levels, u16::from(svn[0])).ok_or_else(|| {
                mismatch(format!("the TDX module's SVN {} is below every level Intel lists", svn[0]))
            })?;
            add_advisories(&mut advisory_ids, &level.advisory_ids);
            Some(level.tcb_status)
        };

        // The QE report is an SGX report body, 384 bytes (the parser takes exactly that many).
        let qe = &self.collateral.qe_identity.value;
        let report = q.qe_report();
        let field = |at: usize, len: usize| &report[at..at + len];
        let miscselect = u32::from_le_bytes([report[16], report[17], report[18], report[19]]);
        let masked_attributes: Vec<u8> =
            field(48, 16).iter().zip(qe.attributes_mask.0).map(|(a, m)| a & m).collect();
        let isvprodid = u16::from_le_bytes([report[256], report[257]]);
        let isvsvn = u16::from_le_bytes([report[258], report[259]]);
        let qe_mismatch =
            if miscselect & u32::from_be_bytes(qe.miscselect_mask.0) != u32::from_be_bytes(qe.miscselect.0) {
                Some("MISCSELECT")
            } else if masked_attributes != qe.attributes.0 {
                Some("ATTRIBUTES")
            } else if field(128, 32) != qe.mrsigner.0 {
                Some("MRSIGNER")
            } else if isvprodid != qe.isvprodid {
                Some("ISVPRODID")
            } else {
                None
            };
        if let Some(what) = qe_mismatch {
            return Err(mismatch(format!(
                "the Quoting Enclave's {what} does not match Intel's TD_QE identity"
            )));
        }
        let qe_level = isv_level(&qe.tcb_levels, isvsvn).ok_or_else(|| {
            mismatch(format!("the Quoting Enclave's ISVSVN {isvsvn} is below every level Intel lists"))
        })?;
        add_advisories(&mut advisory_ids, &qe_level.advisory_ids);

        let mut status = level.tcb_status;
        if let Some(module_status) = module_status {
            status = status.converge(module_status);
        }
        Ok(TcbEvaluation {
            status: status.converge(qe_level.tcb_status),
            platform_status: level.tcb_status,
            module_status,
            qe_status: qe_level.tcb_status,
            advisory_ids,
            tcb_date: level.tcb_date.0,
            fmspc: pck.fmspc,
            tcb_evaluation_data_number: info.tcb_evaluation_data_number,
            collateral_next_update: self
                .collateral
                .tcb_info
                .next_update
                .min(self.collateral.qe_identity.next_update),
            crls_checked: !crls.is_empty(),
        })
    }
}

/// The first level (Intel lists them from the highest SVN down) that `svn` meets.
fn isv_level(levels: &[IsvLevel], svn: u16) -> Option<&IsvLevel> {
    levels.iter().find(|l| l.tcb.isvsvn <= svn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::TdxQuote;

    /// 2025-07-01, when dcap-qvl's quote and collateral are both valid.
    const AT: u64 = 1_751_328_000;

    /// dcap-qvl's real quote and collateral (in the shared fixtures).
    struct Dcap(std::path::PathBuf);

    fn dcap() -> Option<Dcap> {
        teelog_fixtures::open("attestation").map(|f| Dcap(f.path("tdx-collateral/dcap-qvl")))
    }

    impl Dcap {
        fn read(&self, name: &str) -> Vec<u8> {
            std::fs::read(self.0.join(name)).unwrap()
        }

        /// The quote against the collateral as `edit` changes it (so no longer as Intel signed
        /// it: this tests the matching alone).
        fn evaluate(
            &self,
            edit: impl FnOnce(&mut TcbInfo, &mut QeIdentity),
        ) -> Result<TcbEvaluation, AttestError> {
            let quote = TdxQuote::parse(&self.read("quote.dat")).unwrap().verify(AT, false).unwrap();
            let (tcb_info, qe_identity, chain) = (
                self.read("tcb_info.json"),
                self.read("qe_identity.json"),
                self.read("tcb_info_issuer_chain.pem"),
            );
            let mut collateral = TdxCollateral::parse(CollateralFiles {
                tcb_info: &tcb_info,
                tcb_info_issuer_chain: &chain,
                qe_identity: &qe_identity,
                qe_identity_issuer_chain: &chain,
                pck_crl: None,
                root_ca_crl: None,
            })
            .unwrap();
            edit(&mut collateral.tcb_info.value, &mut collateral.qe_identity.value);
            let root_der = quote.root_der().to_vec();
            VerifiedCollateral { collateral, root_der, root_sha256: [0; 32], checked_at: AT }.evaluate(&quote)
        }

        fn mismatch(&self, edit: impl FnOnce(&mut TcbInfo, &mut QeIdentity)) -> String {
            match self.evaluate(edit) {
                Err(AttestError::TcbMismatch(why)) => why,
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_first_level_met_decides_with_its_advisories() {
        let Some(dcap) = dcap() else { return };
        let untouched = dcap.evaluate(|_, _| {}).unwrap();
        assert_eq!((untouched.status, untouched.platform_status), (TcbStatus::UpToDate, TcbStatus::UpToDate));
        // The PCK certificate's PCESVN is 11: a first level asking for 12 is not met.
        let tcb = dcap.evaluate(|info, _| info.tcb_levels[0].tcb.pcesvn = 12).unwrap();
        assert_eq!(tcb.status, TcbStatus::OutOfDate);
        assert_eq!(tcb.advisory_ids.len(), 14);
        assert_eq!(tcb.advisory_ids.last().map(String::as_str), Some("INTEL-SA-00837"));
        assert_eq!(tcb.tcb_date, 1_515_024_000); // 2018-01-04
                                                 // SGX component 8 is 5: a first level asking for 6 is not met either.
        let tcb = dcap.evaluate(|info, _| info.tcb_levels[0].tcb.sgxtcbcomponents[7].svn = 6).unwrap();
        assert_eq!(tcb.status, TcbStatus::OutOfDate);
        let why = dcap.mismatch(|info, _| info.tcb_levels.iter_mut().for_each(|l| l.tcb.pcesvn = 12));
        assert!(why.contains("SGX TCB") && why.contains("not supported"), "{why}");
    }

    #[test]
    fn tdx_components_from_the_third_on_for_a_tdx_1_5_module() {
        let Some(dcap) = dcap() else { return };
        // TEE_TCB_SVN is 06 01 03 ...: bytes 0 and 1 are the module's, judged by its identity.
        let tcb = dcap.evaluate(|info, _| info.tcb_levels[0].tcb.tdxtcbcomponents[0].svn = 200).unwrap();
        assert_eq!(tcb.status, TcbStatus::UpToDate);
        let tcb = dcap.evaluate(|info, _| info.tcb_levels[0].tcb.tdxtcbcomponents[2].svn = 4).unwrap();
        assert_eq!(tcb.status, TcbStatus::OutOfDate);
        let why = dcap
            .mismatch(|info, _| info.tcb_levels.iter_mut().for_each(|l| l.tcb.tdxtcbcomponents[2].svn = 4));
        assert!(why.contains("TEE_TCB_SVN 06010300"), "{why}");
    }

    fn module(info: &mut TcbInfo) -> &mut Module {
        info.tdx_module_identities.iter_mut().find(|m| m.id == "TDX_01").unwrap()
    }

    #[test]
    fn the_tdx_module_identity_and_its_levels() {
        let Some(dcap) = dcap() else { return };
        // The module's SVN is 6; TDX_01 lists 4 (UpToDate) and 2 (OutOfDate).
        let tcb = dcap.evaluate(|info, _| module(info).tcb_levels[0].tcb.isvsvn = 7).unwrap();
        assert_eq!(
            (tcb.status, tcb.platform_status, tcb.module_status),
            (TcbStatus::OutOfDate, TcbStatus::UpToDate, Some(TcbStatus::OutOfDate))
        );
        let why = dcap.mismatch(|info, _| module(info).tcb_levels.iter_mut().for_each(|l| l.tcb.isvsvn = 7));
        assert!(why.contains("TDX module's SVN 6"), "{why}");
        let why = dcap.mismatch(|info, _| module(info).id = "TDX_02".into());
        assert!(why.contains("no identity TDX_01"), "{why}");
        let why = dcap.mismatch(|info, _| module(info).mrsigner.0[0] = 1);
        assert!(why.contains("MRSIGNERSEAM"), "{why}");
        let why = dcap.mismatch(|info, _| module(info).attributes.0[7] = 1);
        assert!(why.contains("SEAM attributes"), "{why}");
    }

    #[test]
    fn the_quoting_enclave_identity_and_its_levels() {
        let Some(dcap) = dcap() else { return };
        for (field, edit) in [
            (
                "MRSIGNER",
                (|_: &mut TcbInfo, qe: &mut QeIdentity| qe.mrsigner.0[31] ^= 1)
                    as fn(&mut TcbInfo, &mut QeIdentity),
            ),
            ("ISVPRODID", |_, qe| qe.isvprodid = 1),
            ("MISCSELECT", |_, qe| qe.miscselect.0[3] = 1),
            ("ATTRIBUTES", |_, qe| qe.attributes.0[0] = 0),
        ] {
            let why = dcap.mismatch(edit);
            assert!(why.contains(field), "{field}: {why}");
        }
        // The QE's ISVSVN is 6 (Intel lists 4): a level of 7 first leaves the next one.
        let tcb = dcap
            .evaluate(|_, qe| {
                qe.tcb_levels[0].tcb.isvsvn = 7;
                qe.tcb_levels.push(IsvLevel {
                    tcb: IsvSvn { isvsvn: 4 },
                    tcb_status: TcbStatus::OutOfDate,
                    advisory_ids: vec!["INTEL-SA-00615".into()],
                });
            })
            .unwrap();
        assert_eq!((tcb.status, tcb.qe_status), (TcbStatus::OutOfDate, TcbStatus::OutOfDate));
        assert_eq!(tcb.advisory_ids, ["INTEL-SA-00615"]);
        let why = dcap.mismatch(|_, qe| qe.tcb_levels[0].tcb.isvsvn = 7);
        assert!(why.contains("ISVSVN 6"), "{why}");
    }

    #[test]
    fn the_tcb_signing_certificate_is_the_one_the_root_issued() {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        use teelog_core::{SigAlg, SoftwareKey};
        let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca = |cn: &str| {
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
        };
        let (root_key, root_params) = (KeyPair::generate_for(p256).unwrap(), ca("test root"));
        let root_der = root_params.self_signed(&root_key).unwrap().der().to_vec();
        let root = Issuer::new(root_params, root_key);
        let (platform_key, platform_params) = (KeyPair::generate_for(p256).unwrap(), ca("test platform CA"));
        let platform_der = platform_params.signed_by(&platform_key, &root).unwrap().der().to_vec();
        let platform = Issuer::new(platform_params, platform_key);
        // One key for the certificate (rcgen) and the r || s signature over the body (teelog).
        let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap();
        let signing_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            p256,
        )
        .unwrap();
        let body = b"{}".to_vec();
        let signature: [u8; 64] =
            SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).unwrap().sign(&body).unwrap().try_into().unwrap();
        let mut leaf = CertificateParams::new(Vec::new()).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, TCB_SIGNING_CN);
        let signed = |chain: Vec<Vec<u8>>| Signed {
            body: body.clone(),
            signature,
            chain,
            value: (),
            issue_date: 0,
            next_update: u64::MAX,
        };
        let direct = leaf.signed_by(&signing_key, &root).unwrap().der().to_vec();
        verify_signed(&signed(vec![direct, root_der.clone()]), Kind::TcbInfo, &root_der, AT, &[]).unwrap();
        // The same name and key one level down, as a PCK's would be: not the TCB Signing certificate.
        let below = leaf.signed_by(&signing_key, &platform).unwrap().der().to_vec();
        let chain = vec![below, platform_der, root_der.clone()];
        let err = verify_signed(&signed(chain), Kind::TcbInfo, &root_der, AT, &[]).unwrap_err();
        assert!(
            matches!(&err, AttestError::Collateral(why) if why.contains("1 certificates below")),
            "{err}"
        );
    }

    #[test]
    fn convergence_follows_intel() {
        use TcbStatus::*;
        for (platform, other, want) in [
            (UpToDate, UpToDate, UpToDate),
            (SwHardeningNeeded, UpToDate, SwHardeningNeeded),
            (UpToDate, OutOfDate, OutOfDate),
            (SwHardeningNeeded, OutOfDate, OutOfDate),
            (ConfigurationNeeded, OutOfDate, OutOfDateConfigurationNeeded),
            (ConfigurationAndSwHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded),
            (OutOfDateConfigurationNeeded, OutOfDate, OutOfDateConfigurationNeeded),
            (Revoked, OutOfDate, Revoked),
            (UpToDate, Revoked, Revoked),
            (ConfigurationNeeded, UpToDate, ConfigurationNeeded),
        ] {
            assert_eq!(platform.converge(other), want, "{platform} with {other}");
        }
    }
}
