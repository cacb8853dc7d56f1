//! Intel TDX DCAP quotes, version 4: the TD report signed by an attestation key, which the
//! Quoting Enclave's report binds, which the platform's PCK certificate signs, which chains to
//! the Intel SGX Root CA: the copy at the end of the quote's own chain, taken only if its SHA-256
//! is the pin.
//!
//! A quote binds a teelog key through `report_data`: its first 32 bytes are the key id (SHA-256
//! of the DER SubjectPublicKeyInfo), the last 32 reserved for the previous epoch's head. The
//! measurement is MRTD. TCB status needs Intel's TCB info and QE identity collateral, which a
//! quote does not carry: `crate::tcb` evaluates a verified quote against them.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use teelog_core::crypto::{p1363_to_der, pem_encode};
use teelog_core::merkle::{sha256, Digest};

use crate::reader::{Endian, Reader};
use crate::{anchor, verify_chain, AttestError};

/// SHA-256 of the DER of the Intel SGX Root CA, as Intel publishes it.
pub const INTEL_SGX_ROOT_CA_SHA256: &str = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

const HEADER_LEN: usize = 48;
const BODY_LEN: usize = 584;
const SIGNED_LEN: usize = HEADER_LEN + BODY_LEN;
const QE_REPORT_LEN: usize = 384;
/// Quotes are a few KiB; the PCK chain dominates.
pub const MAX_QUOTE_BYTES: usize = 64 << 10;
const TEE_TYPE_TDX: u32 = 0x81;
const CERT_DATA_QE_REPORT: u16 = 6;
const CERT_DATA_PCK_CHAIN: u16 = 5;

/// A parsed, not yet verified, TDX quote.
#[derive(Debug, Clone)]
pub struct TdxQuote {
    /// The TDX module's SVN (byte 0), its version (byte 1, 0 for TDX 1.0) and the TDX TCB
    /// components that TCB levels compare.
    pub tee_tcb_svn: [u8; 16],
    /// The measurement of the TDX module's signer (zero for Intel's own module).
    pub mrsignerseam: [u8; 48],
    /// The TDX module's attributes.
    pub seam_attributes: [u8; 8],
    /// The TD's attributes; bit 0 is debug mode, in which the host can read the TD's memory.
    pub td_attributes: [u8; 8],
    /// The measurement of the TD's initial memory: teelog's measurement.
    pub mrtd: [u8; 48],
    /// An identifier given when the TD was launched, reported as given: it names, it does not
    /// measure.
    pub mrconfigid: [u8; 48],
    /// The runtime measurement registers 0 to 3, extended by the TD's firmware and OS.
    pub rtmrs: [[u8; 48]; 4],
    /// What the TD asked to bind: for teelog, see [`crate::ReportDataBinding`].
    pub report_data: [u8; 64],
    signed: Vec<u8>,
    signature: [u8; 64],
    attestation_key: [u8; 64],
    qe_report: Vec<u8>,
    qe_report_signature: [u8; 64],
    qe_auth_data: Vec<u8>,
    pck_chain: Vec<Vec<u8>>,
}

fn err(why: impl Into<String>) -> AttestError {
    AttestError::Tdx(why.into())
}

impl TdxQuote {
    /// Reads a DCAP v4 quote with an ECDSA P-256 attestation key and its PCK chain (at most
    /// [`MAX_QUOTE_BYTES`]); every length is checked against the bytes there. Nothing is verified
    /// yet.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        if bytes.len() > MAX_QUOTE_BYTES {
            return Err(AttestError::TooLarge { len: bytes.len(), max: MAX_QUOTE_BYTES });
        }
        let mut r = Reader::new(bytes, Endian::Little, AttestError::Tdx);
        let version = r.u16("version")?;
        let key_type = r.u16("attestation key type")?;
        let tee_type = r.u32("TEE type")?;
        if version != 4 || key_type != 2 || tee_type != TEE_TYPE_TDX {
            return Err(err(format!(
                "expected a version 4 TDX quote with an ECDSA P-256 key (4, 2, 0x81), found ({version}, {key_type}, {tee_type:#x})"
            )));
        }
        r.take(HEADER_LEN - 8, "header")?;
        let tee_tcb_svn = r.array("TEE_TCB_SVN")?;
        r.take(48, "MRSEAM")?;
        let mrsignerseam = r.array("MRSIGNERSEAM")?;
        let seam_attributes = r.array("SEAM_ATTRIBUTES")?;
        let td_attributes = r.array("TD_ATTRIBUTES")?;
        r.take(8, "XFAM")?;
        let mrtd = r.array("MRTD")?;
        let mrconfigid = r.array("MRCONFIGID")?;
        r.take(96, "MROWNER")?;
        let rtmrs = [r.array("RTMR0")?, r.array("RTMR1")?, r.array("RTMR2")?, r.array("RTMR3")?];
        let report_data = r.array("REPORTDATA")?;
        let signature_len = r.u32("signature data length")? as usize;
        if r.remaining() != signature_len {
            return Err(err(format!("signature data is {signature_len} bytes but {} follow", r.remaining())));
        }
        let signature = r.array("quote signature")?;
        let attestation_key = r.array("attestation key")?;
        let (kind, len) = (r.u16("certification data type")?, r.u32("certification data size")?);
        if kind != CERT_DATA_QE_REPORT {
            return Err(err(format!("certification data type {kind} is not a QE report (6)")));
        }
        let outer_end = r.pos() + len as usize;
        let qe_report = r.take(QE_REPORT_LEN, "QE report")?.to_vec();
        let qe_report_signature = r.array("QE report signature")?;
        let auth_len = r.u16("QE authentication data size")? as usize;
        let qe_auth_data = r.take(auth_len, "QE authentication data")?.to_vec();
        let (kind, len) = (r.u16("PCK certification data type")?, r.u32("PCK certification data size")?);
        if kind != CERT_DATA_PCK_CHAIN {
            return Err(err(format!("certification data type {kind} is not a PCK certificate chain (5)")));
        }
        let pem = r.take(len as usize, "PCK certificate chain")?;
        if r.pos() != outer_end || r.pos() != bytes.len() {
            return Err(err("certification data sizes do not add up to the quote"));
        }
        let pck_chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.strip_suffix(b"\0").unwrap_or(pem))
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("PCK certificate chain: {e}")))?;
        if pck_chain.len() < 2 {
            return Err(err("the PCK certificate chain needs the PCK and its issuing CA"));
        }
        // Only one spelling of the chain is accepted, so that every byte of the quote matters.
        let canonical: String = pck_chain.iter().map(|c| pem_encode("CERTIFICATE", c)).collect();
        if canonical.as_bytes() != pem.strip_suffix(b"\0").unwrap_or(pem) {
            return Err(err(
                "the PCK certificate chain is not in canonical PEM (64-column base64, LF line ends)",
            ));
        }
        Ok(TdxQuote {
            tee_tcb_svn,
            mrsignerseam,
            seam_attributes,
            td_attributes,
            mrtd,
            mrconfigid,
            rtmrs,
            report_data,
            signed: bytes[..SIGNED_LEN].to_vec(),
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain,
        })
    }

    /// TD_ATTRIBUTES bit 0: the TD is debuggable, its memory readable by the host.
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 1 != 0
    }

    /// The Quoting Enclave's report (an SGX report body, 384 bytes).
    pub(crate) fn qe_report(&self) -> &[u8] {
        &self.qe_report
    }

    /// The PCK certificate (DER), first in the quote's chain.
    pub(crate) fn pck_der(&self) -> &[u8] {
        &self.pck_chain[0]
    }

    /// The PCK chain to the pinned root at `at`, and with `crls` not revoked.
    pub(crate) fn verify_pck_chain(
        &self,
        pck: &webpki::EndEntityCert<'_>,
        root_der: &[u8],
        at: u64,
        crls: &[&webpki::CertRevocationList<'_>],
    ) -> Result<(), AttestError> {
        let intermediates = &self.pck_chain[1..self.pck_chain.len() - 1];
        verify_intel_chain(pck, intermediates, root_der, at, crls, "PCK ← Platform CA ← Intel SGX Root CA")
            .map(|_| ())
    }

    /// Verifies the quote signature, the QE report's binding of the attestation key and its
    /// signature by the PCK, and the PCK chain at `at` (Unix seconds) to the Intel SGX Root CA at
    /// its end, which must be the pinned root.
    pub fn verify(self, at: u64, allow_debug: bool) -> Result<TdxVerified, AttestError> {
        let root_der = self.pck_chain.last().map(Vec::as_slice).unwrap_or_default();
        let root_sha256 = pinned_intel_root(root_der).map_err(|_| {
            AttestError::Chain(format!(
                "the quote's chain does not end at the pinned Intel SGX Root CA (SHA-256 {INTEL_SGX_ROOT_CA_SHA256}); it ends at a certificate with SHA-256 {}",
                hex::encode(sha256(root_der))
            ))
        })?;
        if self.debug() && !allow_debug {
            return Err(AttestError::DebugMode);
        }
        // The quote, signed by the attestation key (an uncompressed P-256 point without 0x04).
        let key = [&[0x04][..], &self.attestation_key].concat();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &key)
            .verify(&self.signed, &self.signature)
            .map_err(|_| err("the quote signature does not verify under its attestation key"))?;
        // The QE report binds that key: REPORTDATA = SHA-256(key || QE authentication data) || 0^32.
        let binding = sha256(&[&self.attestation_key[..], &self.qe_auth_data].concat());
        let qe_report_data = &self.qe_report[320..384];
        if qe_report_data[..32] != binding || qe_report_data[32..].iter().any(|&b| b != 0) {
            return Err(err("the QE report does not bind the attestation key"));
        }
        let pck_der = CertificateDer::from(self.pck_der());
        let pck = webpki::EndEntityCert::try_from(&pck_der)
            .map_err(|e| AttestError::Certificate(format!("the PCK certificate is not valid X.509: {e}")))?;
        self.verify_pck_chain(&pck, root_der, at, &[])?;
        pck.verify_signature(
            webpki::ring::ECDSA_P256_SHA256,
            &self.qe_report,
            &p1363_to_der(&self.qe_report_signature),
        )
        .map_err(|_| err("the QE report signature does not verify under the PCK certificate"))?;
        Ok(TdxVerified { root_sha256, checked_at: at, quote: self })
    }
}

/// The SHA-256 of `root_der`, if it is the pinned Intel SGX Root CA.
pub(crate) fn pinned_intel_root(root_der: &[u8]) -> Result<Digest, AttestError> {
    let root_sha256 = sha256(root_der);
    if hex::encode(root_sha256) != INTEL_SGX_ROOT_CA_SHA256 {
        return Err(AttestError::Root(format!(
            "not the pinned Intel SGX Root CA ({INTEL_SGX_ROOT_CA_SHA256})"
        )));
    }
    Ok(root_sha256)
}

/// Checks `leaf` through `intermediates` (DER) to the Intel root at `at`, against `crls` if any;
/// `chain` names it in errors. Both Intel chains (PCK, TCB Signing) are ECDSA P-256 throughout.
/// Returns how many intermediates the verified path took.
pub(crate) fn verify_intel_chain(
    leaf: &webpki::EndEntityCert<'_>,
    intermediates: &[Vec<u8>],
    root_der: &[u8],
    at: u64,
    crls: &[&webpki::CertRevocationList<'_>],
    chain: &str,
) -> Result<usize, AttestError> {
    let root = CertificateDer::from(root_der);
    let anchors = [anchor(&root)?];
    let intermediates: Vec<CertificateDer<'_>> =
        intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let algs = [webpki::ring::ECDSA_P256_SHA256];
    let path = verify_chain(leaf, &algs, &anchors, &intermediates, at, crls, chain)?;
    Ok(path.intermediate_certificates().count())
}

/// What a verified quote proves: its PCK chain reaches the pinned Intel root, the QE report is
/// signed by the PCK and binds the attestation key, which signs the quote.
#[derive(Debug, Clone)]
pub struct TdxVerified {
    /// The quote.
    pub quote: TdxQuote,
    /// SHA-256 of the root the PCK chain ended at.
    pub root_sha256: Digest,
    /// When the chain was checked (Unix seconds).
    pub checked_at: u64,
}

impl TdxVerified {
    /// The pinned Intel SGX Root CA (DER), as the quote carried it: the root Intel's collateral
    /// must chain to as well.
    pub fn root_der(&self) -> &[u8] {
        self.quote.pck_chain.last().map(Vec::as_slice).unwrap_or_default()
    }
}
