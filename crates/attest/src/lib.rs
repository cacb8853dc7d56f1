//! Verification of TEE attestation documents that bind a teelog signing key to measured code.
//! Sans-IO: bytes and a verification time in, a verdict out. Roots of trust are given by the
//! caller, or pinned here by the SHA-256 of their certificate, which then comes with the document
//! ([`VendorRoot`]). Which root a chain reached is the very anchor it ended at, never one that
//! merely shares its name.
#![forbid(unsafe_code)]

mod cbor;
mod der;
pub mod dev;
pub mod document;
pub mod nitro;
mod pinned;
pub mod reader;
pub mod snp;
pub mod tcb;
pub mod tdx;
pub mod tpm;

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use teelog_core::merkle::{sha256, Digest};

use teelog_core::verify::{AttestationVerifier, AttestedKey, DocumentError, TrustBasis};
use teelog_core::PublicKey;

pub use pinned::VendorRoot;

/// SHA-256 of the DER of the AWS Nitro Enclaves root G1 (CN=aws.nitro-enclaves), as AWS
/// publishes it.
pub const AWS_NITRO_ROOT_G1_SHA256: &str = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// Why a document, certificate, root or collateral was not accepted. The variants say at which
/// step; the text in each says what exactly, in words an auditor can act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttestError {
    /// The input is not raw CBOR, hex or base64 ([`decode_document`]).
    #[error("not an attestation document: expected raw CBOR, base64 or hex ({0})")]
    Encoding(String),
    /// The input is over a size limit; it was not parsed.
    #[error("document of {len} bytes is larger than the {max}-byte limit")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Not a COSE_Sign1 structure as Nitro (and dev) documents are.
    #[error("malformed COSE_Sign1: {0}")]
    Cose(String),
    /// A field of a document's payload is missing, of the wrong type or out of range.
    #[error("malformed payload: field {field:?} {reason}")]
    Payload {
        /// The field's name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A PCR the verifier needs (PCR0, the measurement) is absent.
    #[error("PCR{0} is missing; it is required")]
    MissingPcr(u64),
    /// The document comes from a debuggable TEE and debug mode was not allowed.
    #[error("debug mode (a Nitro enclave with PCR0, PCR1 and PCR2 all zero, or an SEV-SNP guest whose policy allows debugging): its memory is readable by the host; pass --allow-debug to accept it")]
    DebugMode,
    /// A certificate that does not parse, or is not usable where it is used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The certificate chain does not verify to a trusted root at the time it is checked
    /// (expired, revoked, unknown issuer, bad signature); names the chain.
    #[error("certificate chain rejected: {0}")]
    Chain(String),
    /// The document's own signature does not verify: it was altered or forged.
    #[error("the document's signature does not verify under its signing certificate")]
    Signature,
    /// A root the caller gave is not usable, or a chain reached a root of the wrong kind (a
    /// lookalike of a pinned vendor root).
    #[error("trust root: {0}")]
    Root(String),
    /// An SEV-SNP attestation report that does not parse or is of an unsupported version.
    #[error("malformed SEV-SNP report: {0}")]
    Snp(String),
    /// A TDX quote that does not parse, or whose signatures or QE report do not verify.
    #[error("TDX quote: {0}")]
    Tdx(String),
    /// Intel's collateral (TCB info, QE identity, CRLs) does not parse or verify.
    #[error("TDX collateral: {0}")]
    Collateral(String),
    /// The quote is not covered by the collateral (another FMSPC, QE identity mismatch, …).
    #[error("the TDX quote does not match Intel's collateral: {0}")]
    TcbMismatch(String),
    /// The platform's TCB level is below what the caller accepts (out of date, needs
    /// configuration, revoked); the message names the flag that accepts it, where one does.
    #[error("the platform's TCB status is {status}{}: {}; pass {} to accept it", advisories(advisory_ids), status.warning().unwrap_or_default(), status.allow_flag())]
    TcbRefused {
        /// The platform's TCB status per the collateral.
        status: tcb::TcbStatus,
        /// Intel's advisory ids for that level, comma-separated (may be empty).
        advisory_ids: String,
    },
    /// A TPM evidence bundle, quote or certification that does not parse or verify.
    #[error("TPM evidence: {0}")]
    Tpm(String),
    /// The document verifies but binds another key than the one it was checked against.
    #[error("the document binds {}, not the given key ({given})", bound.as_ref().map_or("no key".to_string(), |id| format!("key id {id}")))]
    OtherKey {
        /// The key id (hex) the document binds, if any.
        bound: Option<String>,
        /// The key id (hex) of the key given.
        given: String,
    },
}

/// A root the caller trusts, identified by the SHA-256 of its DER: a pinned vendor root, or a
/// root the auditor gave (a dev root, a TPM enrollment CA).
#[derive(Debug, Clone)]
pub struct TrustRoot {
    /// The certificate; `None` for a pinned root whose certificate comes with each document.
    der: Option<Vec<u8>>,
    sha256: Digest,
    vendor: Option<VendorRoot>,
}

impl TrustRoot {
    /// The AWS Nitro Enclaves root G1, pinned: a document's `cabundle[0]` stands for it when its
    /// SHA-256 is the pin.
    pub fn aws_nitro() -> Self {
        let vendor = VendorRoot::AwsNitroG1;
        Self { der: None, sha256: vendor.sha256(), vendor: Some(vendor) }
    }

    /// A root given by the user (a dev root from `teelog keygen --dev`, an enrollment CA), from
    /// PEM or DER. A pinned vendor root given again is that root; a certificate that has a
    /// pinned root's subject or key but other bytes is refused ([`VendorRoot::identify`]).
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, AttestError> {
        let der = match CertificateDer::from_pem_slice(bytes) {
            Ok(der) => der.to_vec(),
            Err(_) if bytes.first() == Some(&0x30) => bytes.to_vec(),
            Err(e) => return Err(AttestError::Root(format!("not a PEM or DER certificate: {e}"))),
        };
        webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
            .map_err(|e| AttestError::Root(format!("not a usable root certificate: {e}")))?;
        let vendor = VendorRoot::identify(&der)?;
        let sha256 = sha256(&der);
        Ok(Self { der: Some(der), sha256, vendor })
    }

    /// Every certificate of a PEM bundle (a maker's issuing CAs and root), or one DER
    /// certificate.
    pub fn all_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Self>, AttestError> {
        if bytes.first() == Some(&0x30) {
            return Ok(vec![Self::from_pem_or_der(bytes)?]);
        }
        let ders = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AttestError::Root(format!("not a PEM certificate: {e}")))?;
        if ders.is_empty() {
            return Err(AttestError::Root("no CERTIFICATE in the PEM".into()));
        }
        let count = ders.len();
        ders.iter()
            .enumerate()
            .map(|(i, der)| {
                Self::from_pem_or_der(der).map_err(|e| match e {
                    AttestError::Root(why) if count > 1 => {
                        AttestError::Root(format!("certificate {} of {count} in the PEM: {why}", i + 1))
                    }
                    other => other,
                })
            })
            .collect()
    }

    /// The certificate, where the caller gave it; a pinned root's comes with each document.
    pub fn der(&self) -> Option<&[u8]> {
        self.der.as_deref()
    }

    /// The SHA-256 of the root's certificate DER: what identifies it.
    pub fn sha256(&self) -> &Digest {
        &self.sha256
    }

    /// The pinned vendor root this is, or `None` for a root the auditor vouches for alone.
    pub fn vendor(&self) -> Option<VendorRoot> {
        self.vendor
    }
}

/// Builds the chain from `leaf` through `intermediates` to one of `anchors` and checks it at `at`
/// (Unix seconds); `chain` names it in errors ("VCEK ← ASK ← ARK"). With `crls`, every
/// certificate below the anchor must be covered by a current CRL of its issuer and not revoked.
pub(crate) fn verify_chain<'p>(
    leaf: &'p webpki::EndEntityCert<'p>,
    algs: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm],
    anchors: &'p [rustls_pki_types::TrustAnchor<'p>],
    intermediates: &'p [CertificateDer<'p>],
    at: u64,
    crls: &'p [&'p webpki::CertRevocationList<'p>],
    chain: &str,
) -> Result<webpki::VerifiedPath<'p>, AttestError> {
    let revocation = webpki::RevocationOptionsBuilder::new(crls).ok().map(|options| {
        options
            .with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(webpki::UnknownStatusPolicy::Deny)
            .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
            .build()
    });
    leaf.verify_for_usage(
        algs,
        anchors,
        intermediates,
        unix_time(at),
        webpki::KeyUsage::client_auth(),
        revocation,
        None,
    )
    .map_err(|e| chain_error(e, at, chain))
}

/// [`verify_chain`] for a leaf with an extended key usage of its own (a TPM's EK certificate),
/// without CRLs.
pub(crate) fn verify_chain_for<'p>(
    leaf: &'p webpki::EndEntityCert<'p>,
    usage: webpki::KeyUsage,
    algs: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm],
    anchors: &'p [rustls_pki_types::TrustAnchor<'p>],
    intermediates: &'p [CertificateDer<'p>],
    at: u64,
    chain: &str,
) -> Result<webpki::VerifiedPath<'p>, AttestError> {
    leaf.verify_for_usage(algs, anchors, intermediates, unix_time(at), usage, None, None)
        .map_err(|e| chain_error(e, at, chain))
}

fn unix_time(seconds: u64) -> rustls_pki_types::UnixTime {
    rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds))
}

/// A chain failure in words, naming the chain and the time it was checked at.
fn chain_error(e: webpki::Error, at: u64, chain: &str) -> AttestError {
    use webpki::Error as E;
    let why = match e {
        E::CertExpired { not_after, .. } => {
            format!(
                "a certificate is not valid at {}: it expired at {}",
                rfc3339(at),
                rfc3339(not_after.as_secs())
            )
        }
        E::CertNotValidYet { not_before, .. } => format!(
            "a certificate is not valid at {}: it is valid only from {}",
            rfc3339(at),
            rfc3339(not_before.as_secs())
        ),
        E::UnknownIssuer => "the chain does not reach a pinned root (re-signed by another CA?)".to_string(),
        E::InvalidSignatureForPublicKey | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            format!("a certificate signature does not verify: {e:?}")
        }
        E::CertRevoked => "a certificate is revoked by its issuer's CRL".to_string(),
        E::UnknownRevocationStatus => {
            "no CRL given covers a certificate of the chain (a CRL of its issuer is needed)".to_string()
        }
        E::CrlExpired { next_update, .. } => format!(
            "a CRL is not current at {}: its nextUpdate was {}",
            rfc3339(at),
            rfc3339(next_update.as_secs())
        ),
        E::InvalidCrlSignatureForPublicKey | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
            "a CRL's signature does not verify under its issuer".to_string()
        }
        other => format!("{other:?}"),
    };
    AttestError::Chain(format!("{chain}: {why}"))
}

fn advisories(ids: &str) -> String {
    if ids.is_empty() {
        String::new()
    } else {
        format!(" ({ids})")
    }
}

pub(crate) fn rfc3339(seconds: u64) -> String {
    teelog_core::timestamp::format_rfc3339(
        i64::try_from(seconds).unwrap_or(i64::MAX).saturating_mul(1_000_000_000),
    )
}

/// What an SEV-SNP or TDX report_data says of the teelog key it binds: its first 32 bytes are
/// the key id (SHA-256 of the SubjectPublicKeyInfo), the last 32 the previous epoch's head, or
/// zero when there is none.
pub struct ReportDataBinding {
    /// The bound key's id: SHA-256 of its SubjectPublicKeyInfo DER.
    pub key_id: [u8; 32],
    /// The header hash of the previous epoch's last batch, when the report says one.
    pub previous_head: Option<[u8; 32]>,
}

impl ReportDataBinding {
    /// Splits a 64-byte report_data. All 64-byte inputs are taken: whether the key id is the
    /// batch's key is for the caller to compare.
    pub fn of(report_data: &[u8; 64]) -> Self {
        let (mut key_id, mut head) = ([0u8; 32], [0u8; 32]);
        key_id.copy_from_slice(&report_data[..32]);
        head.copy_from_slice(&report_data[32..]);
        Self { key_id, previous_head: (head != [0; 32]).then_some(head) }
    }
}

/// The certificates `roots` stand for in one document: a given root's own, and a pinned root's
/// copy among `carried` (what the document carries for it), if one has its SHA-256. A pinned root
/// the document carries no copy of anchors nothing.
pub(crate) fn root_certificates<'a>(
    roots: &'a [TrustRoot],
    carried: &'a [Vec<u8>],
) -> Vec<(&'a TrustRoot, CertificateDer<'a>)> {
    roots
        .iter()
        .filter_map(|root| {
            let der = match root.der() {
                Some(der) => der,
                None => carried.iter().find(|c| sha256(c) == root.sha256)?,
            };
            Some((root, CertificateDer::from(der)))
        })
        .collect()
}

/// The root a verified chain ended at, of the `roots` the `anchors` were made from in order.
/// webpki hands back a reference to the very element of `anchors` it reached, so its position
/// names the root: not a name match, which every dev root (they share one subject) or a
/// lookalike of a vendor root would pass, nor a key match, which two certificates of one key
/// would.
pub(crate) fn reached_root<'r>(
    roots: &[(&'r TrustRoot, CertificateDer<'_>)],
    anchors: &[rustls_pki_types::TrustAnchor<'_>],
    path: &webpki::VerifiedPath<'_>,
) -> Result<&'r TrustRoot, AttestError> {
    let reached = path.anchor();
    anchors
        .iter()
        .position(|a| std::ptr::eq(a, reached))
        .and_then(|i| roots.get(i))
        .map(|(root, _)| *root)
        .ok_or_else(|| {
            AttestError::Certificate("the chain ended at an anchor that is none of the roots".into())
        })
}

/// A trust anchor from a root certificate the caller pinned.
pub(crate) fn anchor<'a>(
    root: &'a CertificateDer<'a>,
) -> Result<rustls_pki_types::TrustAnchor<'a>, AttestError> {
    webpki::anchor_from_trusted_cert(root).map_err(|e| AttestError::Certificate(e.to_string()))
}

/// The attestation provider for `teelog verify`: a batch's key is the one its verified
/// document binds — the SubjectPublicKeyInfo in a Nitro (or dev) document's `public_key`, or the
/// TPM key a TPM evidence bundle certifies — and its measurement the document's (PCR0, or the
/// quoted PCR digest).
pub struct BindingVerifier {
    /// The roots a document's chain may end at: pinned vendor roots and those the auditor gave.
    pub roots: Vec<TrustRoot>,
    /// Accept documents of debug-mode enclaves, whose memory the host can read.
    pub allow_debug: bool,
    /// When documents without a time of their own (TPM evidence) are checked, in Unix seconds.
    pub now: u64,
}

impl BindingVerifier {
    fn nitro(&self, document: &[u8]) -> Result<AttestedKey, DocumentError> {
        let parsed = nitro::NitroDocument::parse(document).map_err(rejected)?;
        let verified = match parsed.clone().verify(&self.roots, None, self.allow_debug) {
            Ok(verified) => verified,
            // A dev document whose root was not given is the auditor's omission, most likely
            // (a restart with `keygen --dev` makes a new root): say which root, not "forged".
            Err(e @ AttestError::Chain(_)) if parsed.module_id.starts_with("dev-") => {
                return Err(DocumentError::DevRootNotGiven {
                    error: Arc::new(e),
                    root_sha256: parsed
                        .cabundle
                        .first()
                        .map(|der| hex::encode(sha256(der)))
                        .unwrap_or_default(),
                    module_id: parsed.module_id,
                });
            }
            Err(e) => return Err(rejected(e)),
        };
        let spki = verified.document.public_key.as_deref().ok_or(DocumentError::NoKey)?;
        let key = PublicKey::from_spki_der(spki).map_err(DocumentError::Key)?;
        let measurement = verified.document.pcrs.get(&0).map(hex::encode).unwrap_or_default();
        let platform = if verified.dev { "dev" } else { "aws-nitro" }.to_string();
        Ok(AttestedKey {
            key,
            measurement,
            platform,
            previous_head: previous_head(verified.document.nonce.as_deref()),
            anchor: verified.basis(),
            attested_at: i64::try_from(verified.document.timestamp_ms)
                .ok()
                .map(|ms| ms.saturating_mul(1_000_000)),
        })
    }

    fn tpm(&self, document: &[u8]) -> Result<AttestedKey, DocumentError> {
        let verified = tpm::bundle::TpmBundle::parse(document)
            .and_then(|b| b.verify(&self.roots, self.now))
            .map_err(rejected)?
            .evidence;
        Ok(AttestedKey {
            previous_head: previous_head(Some(&verified.qualifying_data)),
            key: verified.key,
            measurement: hex::encode(verified.measurement),
            platform: "tpm".to_string(),
            anchor: TrustBasis::TpmEnrollmentCa,
            attested_at: None,
        })
    }
}

/// A document refused for a reason of this crate's, kept as the source so that the caller can
/// downcast it to [`AttestError`].
fn rejected(e: AttestError) -> DocumentError {
    DocumentError::Rejected(Arc::new(e))
}

/// A 32-byte nonce (Nitro) or quote qualifying data (TPM) is the previous epoch's head
/// (docs/FORMAT.md §7a).
fn previous_head(nonce: Option<&[u8]>) -> Option<String> {
    nonce.filter(|n| n.len() == 32).map(hex::encode)
}

impl AttestationVerifier for BindingVerifier {
    fn verify_document(&self, document: &[u8]) -> Result<AttestedKey, DocumentError> {
        match document.first() {
            Some(0x84 | 0xd2) => self.nitro(document),
            Some(&b) if is_cbor_map(b) => self.tpm(document),
            _ => Err(DocumentError::UnknownKind {
                expected: "a Nitro (COSE_Sign1) document nor a TPM evidence bundle",
            }),
        }
    }
}

/// The first byte of a CBOR map (major type 5), as a TPM evidence bundle starts.
pub fn is_cbor_map(first: u8) -> bool {
    first >> 5 == 5
}

/// Attestation documents travel as raw CBOR, base64 or hex text; this accepts all three.
pub fn decode_document(bytes: &[u8]) -> Result<Vec<u8>, AttestError> {
    // COSE_Sign1 starts with an array of four (0x84) or tag 18 (0xd2), a TPM evidence bundle
    // with a map; an SEV-SNP report is binary of a fixed size. None of these is ASCII text.
    if matches!(bytes.first(), Some(0x84 | 0xd2))
        || bytes.first().is_some_and(|&b| is_cbor_map(b))
        || bytes.len() == snp::REPORT_LEN
    {
        return Ok(bytes.to_vec());
    }
    let text: String = String::from_utf8_lossy(bytes).split_whitespace().collect();
    if text.is_empty() {
        return Err(AttestError::Encoding("the input is empty".into()));
    }
    if text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(&text).map_err(|e| AttestError::Encoding(format!("hex: {e}")));
    }
    base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|e| AttestError::Encoding(format!("base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue};
    use teelog_core::{SigAlg, SoftwareKey};

    #[test]
    fn the_pinned_roots_are_pins_and_given_again_are_themselves() {
        let root = TrustRoot::aws_nitro();
        assert_eq!(hex::encode(root.sha256()), AWS_NITRO_ROOT_G1_SHA256);
        assert_eq!((root.vendor(), root.der()), (Some(VendorRoot::AwsNitroG1), None));
        // Giving a pinned root again (PEM or DER) is harmless: it is that root.
        for vendor in VendorRoot::ALL {
            let Some(der) = pinned::fixture_der(vendor) else { return };
            let pem = teelog_core::crypto::pem_encode("CERTIFICATE", &der);
            for given in [&der[..], pem.as_bytes()] {
                let again = TrustRoot::from_pem_or_der(given).unwrap();
                assert_eq!((again.vendor(), again.sha256()), (Some(vendor), &vendor.sha256()));
            }
        }
    }

    const NOW_MS: u64 = 1_796_202_000_000;

    /// A Nitro-layout document under a new root named `name`, and that root (DER).
    fn document_under(name: DistinguishedName) -> (Vec<u8>, Vec<u8>) {
        let key =
            SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap())
                .unwrap()
                .public()
                .clone();
        let pcrs = dev::default_pcrs();
        let claims = dev::DevClaims {
            module_id: "i-0lookalike",
            timestamp_ms: NOW_MS,
            pcrs: &pcrs,
            bound_key: &key,
            nonce: None,
        };
        let issued = dev::issue_under(name, &claims).unwrap();
        (issued.document, issued.root_der)
    }

    /// The AWS root's subject, attribute for attribute and string type for string type.
    fn aws_name() -> DistinguishedName {
        let mut name = DistinguishedName::new();
        name.push(DnType::CountryName, DnValue::PrintableString("US".try_into().unwrap()));
        name.push(DnType::OrganizationName, "Amazon");
        name.push(DnType::OrganizationalUnitName, "AWS");
        name.push(DnType::CommonName, "aws.nitro-enclaves");
        name
    }

    fn anchor_of(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let cert = CertificateDer::from(der);
        let anchor = webpki::anchor_from_trusted_cert(&cert).unwrap();
        (anchor.subject.to_vec(), anchor.subject_public_key_info.to_vec())
    }

    fn refused(der: &[u8], needles: &[&str]) {
        match TrustRoot::from_pem_or_der(der) {
            Err(AttestError::Root(why)) => {
                for needle in needles.iter().chain(&["lookalike"]) {
                    assert!(why.contains(needle), "{needle:?} in {why}");
                }
            }
            other => panic!("a lookalike was not refused: {other:?}"),
        }
    }

    /// A root the auditor gave, bypassing the lookalike check (as if it had slipped through).
    fn given(der: Vec<u8>, vendor: Option<VendorRoot>) -> TrustRoot {
        TrustRoot { sha256: sha256(&der), der: Some(der), vendor }
    }

    #[test]
    fn a_root_with_the_aws_subject_is_refused_and_could_never_pass_for_aws() {
        let (document, lookalike) = document_under(aws_name());
        if let Some(aws) = pinned::fixture_der(VendorRoot::AwsNitroG1) {
            assert_eq!(anchor_of(&lookalike).0, anchor_of(&aws).0, "AWS's subject, byte for byte");
        }
        refused(&lookalike, &["subject (CN \"aws.nitro-enclaves\") of the AWS Nitro Enclaves root G1"]);
        // Were it trusted all the same, after AWS's as `--trust-root` lists it, the chain reaches
        // it and not AWS's: a dev document, trust resting on a dev root.
        let slipped = given(lookalike, None);
        let verifier = BindingVerifier {
            roots: vec![TrustRoot::aws_nitro(), slipped.clone()],
            allow_debug: false,
            now: 0,
        };
        let attested = verifier.verify_document(&document).unwrap();
        assert_eq!((attested.platform.as_str(), attested.anchor), ("dev", TrustBasis::DevRoot));
        let verified =
            nitro::NitroDocument::parse(&document).unwrap().verify(&verifier.roots, None, false).unwrap();
        assert!(verified.dev);
        assert_eq!(verified.root_sha256, *slipped.sha256());
    }

    #[test]
    fn a_common_name_in_another_case_spacing_or_string_type_is_the_same_name() {
        let names = [
            DnValue::Utf8String("AWS.Nitro-Enclaves".into()),
            DnValue::PrintableString(" aws.nitro-enclaves ".try_into().unwrap()),
            DnValue::BmpString("aws.nitro-enclaves".try_into().unwrap()),
            DnValue::TeletexString("aws.nitro-enclaves".try_into().unwrap()),
        ];
        for value in names {
            let mut name = DistinguishedName::new();
            name.push(DnType::OrganizationName, "not Amazon");
            name.push(DnType::CommonName, value.clone());
            let (_, root) = document_under(name);
            refused(&root, &["subject", "AWS Nitro Enclaves root G1"]);
        }
        // Intel's and AMD's roots are pinned too.
        for (cn, vendor) in [("intel sgx root ca", "Intel SGX Root CA"), ("ARK-Milan", "AMD's ARK for Milan")]
        {
            let mut name = DistinguishedName::new();
            name.push(DnType::CommonName, cn);
            refused(&document_under(name).1, &[vendor]);
        }
    }

    /// A public key certified by a throwaway CA, whose private half nobody here has.
    struct ForeignKey(Vec<u8>);

    impl rcgen::PublicKeyData for ForeignKey {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_ECDSA_P384_SHA384
        }
    }

    fn certifying(key: Vec<u8>, cn: &str) -> Vec<u8> {
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "throwaway CA");
        let issuer =
            rcgen::Issuer::new(ca, rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap());
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.signed_by(&ForeignKey(key), &issuer).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_of_a_pinned_key_is_refused_whatever_its_name_or_spelling() {
        let Some(aws) = pinned::fixture_der(VendorRoot::AwsNitroG1) else { return };
        let (_, spki) = anchor_of(&aws);
        let point = der::public_key_bits(&spki).unwrap().to_vec();
        assert_eq!((point.len(), point[0]), (97, 0x04), "an uncompressed P-384 point");
        let renamed = certifying(point.clone(), "not aws at all");
        assert_eq!(anchor_of(&renamed).1, spki, "AWS's SubjectPublicKeyInfo, byte for byte");
        refused(&renamed, &["public key of the AWS Nitro Enclaves root G1"]);
        // The same point compressed.
        let compressed = [&[0x02 | (point[96] & 1)][..], &point[1..49]].concat();
        refused(&certifying(compressed, "not aws at all"), &["public key"]);
        // AWS's own certificate with its signature edited: AWS's subject and key, other bytes.
        // Every pinned root likewise.
        for vendor in VendorRoot::ALL {
            let Some(mut edited) = pinned::fixture_der(vendor) else { return };
            let last = edited.len() - 1;
            edited[last] ^= 1;
            refused(&edited, &["public key", vendor.name()]);
        }
    }

    #[test]
    fn dev_roots_sharing_a_subject_are_told_apart_by_the_one_reached() {
        let name = || {
            let mut name = DistinguishedName::new();
            name.push(DnType::CommonName, "teelog dev root (not hardware-backed)");
            name
        };
        let (_, first) = document_under(name());
        let (document, second) = document_under(name());
        let roots = vec![TrustRoot::aws_nitro(), given(first, None), given(second, None)];
        let verified = nitro::NitroDocument::parse(&document).unwrap().verify(&roots, None, false).unwrap();
        assert_eq!(verified.root_sha256, *roots[2].sha256());
    }

    #[test]
    fn a_chain_to_a_vendor_root_of_another_kind_is_refused() {
        // As if the root a Nitro-layout document or a TPM bundle chained to were Intel's or AWS's.
        let (document, root) = document_under(aws_name());
        let intel = given(root, Some(VendorRoot::IntelSgxRootCa));
        let err = nitro::NitroDocument::parse(&document).unwrap().verify(&[intel], None, false).unwrap_err();
        assert!(matches!(&err, AttestError::Root(why) if why.contains("Intel SGX Root CA")), "{err}");

        let vector: serde_json::Value = serde_json::from_slice(
            &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors/tpm-evidence-v1.json"))
                .unwrap(),
        )
        .unwrap();
        let document = hex::decode(vector["document_hex"].as_str().unwrap()).unwrap();
        let ca =
            TrustRoot::from_pem_or_der(vector["enrollment_ca_pem"].as_str().unwrap().as_bytes()).unwrap();
        let verifier = |roots| BindingVerifier {
            roots,
            allow_debug: false,
            now: vector["checked_at"].as_u64().unwrap(),
        };
        let attested = verifier(vec![TrustRoot::aws_nitro(), ca.clone()]).verify_document(&document).unwrap();
        assert_eq!((attested.platform.as_str(), attested.anchor), ("tpm", TrustBasis::TpmEnrollmentCa));
        let as_aws = given(ca.der().unwrap().to_vec(), Some(VendorRoot::AwsNitroG1));
        let err = verifier(vec![as_aws]).verify_document(&document).unwrap_err();
        // The caller can tell the cause apart by the provider's own error.
        let DocumentError::Rejected(cause) = &err else { panic!("{err:?}") };
        assert!(
            matches!(cause.downcast_ref::<AttestError>(), Some(AttestError::Root(why))
                if why.contains("AWS Nitro Enclaves root G1") && why.contains("enrollment CA")),
            "{err}"
        );
        let err = verifier(vec![ca]).verify_document(b"not a document").unwrap_err();
        assert!(matches!(err, DocumentError::UnknownKind { .. }), "{err:?}");
        assert!(err.to_string().starts_with("neither a Nitro (COSE_Sign1) document nor a TPM"), "{err}");
    }

    #[test]
    fn decodes_raw_hex_and_base64() {
        assert_eq!(decode_document(&[0x84, 1]).unwrap(), [0x84, 1]);
        assert_eq!(decode_document(b"84 01\n").unwrap(), [0x84, 1]);
        assert_eq!(decode_document(b"hAE=").unwrap(), [0x84, 1]);
        assert!(matches!(decode_document(b"  "), Err(AttestError::Encoding(_))));
        assert!(matches!(decode_document(b"not base64!"), Err(AttestError::Encoding(_))));
    }
}
