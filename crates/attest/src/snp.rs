//! AMD SEV-SNP attestation reports: a fixed 1184-byte structure signed (ECDSA P-384, SHA-384) by
//! the chip's VCEK, whose certificate chains VCEK ← ASK ← ARK with the ARK pinned. A report
//! carries none of these certificates: the caller gives the VCEK, and the ARK and ASK as AMD's key
//! server serves them (`cert_chain`).
//!
//! A report binds a teelog key through `report_data`: its first 32 bytes are the SHA-256 of the
//! key's DER SubjectPublicKeyInfo (its key id); the last 32 are reserved for the previous epoch's
//! head (zero otherwise). The measurement is the 48-byte launch `MEASUREMENT`.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm,
};
use teelog_core::crypto::p1363_to_der;
use teelog_core::merkle::{sha256, Digest};

use crate::{anchor, verify_chain, AttestError, VendorRoot};

/// SHA-256 of the DER of AMD's ARK for Milan, as AMD publishes it.
pub const AMD_ARK_MILAN_SHA256: &str = "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd";

/// An attestation report's length in bytes (the same for versions 2 to 5).
pub const REPORT_LEN: usize = 0x4A0;
const SIGNED_LEN: usize = 0x2A0;
/// Guest policy bit 19: the hypervisor may debug the guest (read and write its memory).
const POLICY_DEBUG: u64 = 1 << 19;

/// A TCB version as the report lists it (Milan and Genoa layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcb {
    /// The security version of the boot loader.
    pub bootloader: u8,
    /// The security version of the PSP operating system.
    pub tee: u8,
    /// The security version of the SNP firmware.
    pub snp: u8,
    /// The microcode patch level.
    pub microcode: u8,
}

impl Tcb {
    fn from_u64(raw: u64) -> Self {
        let b = raw.to_le_bytes();
        Tcb { bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] }
    }
}

/// A parsed, not yet verified, SEV-SNP attestation report.
#[derive(Debug, Clone)]
pub struct SnpReport {
    /// The report format's version (2 to 5 are read).
    pub version: u32,
    /// The guest's security version, as its owner set it.
    pub guest_svn: u32,
    /// The guest policy; bit 19 allows the hypervisor to debug it ([`SnpReport::debug_allowed`]).
    pub policy: u64,
    /// The VM privilege level that asked for the report (0 is the most privileged).
    pub vmpl: u32,
    /// What the guest asked to bind: for teelog, see [`crate::ReportDataBinding`].
    pub report_data: [u8; 64],
    /// The launch measurement of the guest's initial memory: teelog's measurement.
    pub measurement: [u8; 48],
    /// Data the host gave at launch; not the guest's to choose.
    pub host_data: [u8; 32],
    /// The chip's unique id, which its VCEK is issued for.
    pub chip_id: [u8; 64],
    /// The TCB version the firmware reports.
    pub reported_tcb: Tcb,
    bytes: Vec<u8>,
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(bytes, at))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(bytes, at))
}

impl SnpReport {
    /// Reads a report of exactly [`REPORT_LEN`] bytes, of version 2 to 5, signed with ECDSA
    /// P-384. Nothing is verified yet: see [`SnpReport::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        if bytes.len() != REPORT_LEN {
            return Err(AttestError::Snp(format!("a report is {REPORT_LEN} bytes, this is {}", bytes.len())));
        }
        let version = u32_at(bytes, 0x00);
        if !(2..=5).contains(&version) {
            return Err(AttestError::Snp(format!("report version {version} is not supported (2 to 5)")));
        }
        let algo = u32_at(bytes, 0x34);
        if algo != 1 {
            return Err(AttestError::Snp(format!(
                "signature algorithm {algo} is not ECDSA P-384 with SHA-384 (1)"
            )));
        }
        Ok(SnpReport {
            version,
            guest_svn: u32_at(bytes, 0x04),
            policy: u64_at(bytes, 0x08),
            vmpl: u32_at(bytes, 0x30),
            report_data: array(bytes, 0x50),
            measurement: array(bytes, 0x90),
            host_data: array(bytes, 0xC0),
            reported_tcb: Tcb::from_u64(u64_at(bytes, 0x180)),
            chip_id: array(bytes, 0x1A0),
            bytes: bytes.to_vec(),
        })
    }

    /// Whether the guest's policy lets the hypervisor read and write its memory.
    pub fn debug_allowed(&self) -> bool {
        self.policy & POLICY_DEBUG != 0
    }

    /// The signature as r || s, big-endian: the report stores each as 72 little-endian bytes of
    /// which the low 48 carry the P-384 value.
    fn signature_p1363(&self) -> Result<Vec<u8>, AttestError> {
        let field = |at: usize| {
            let le = &self.bytes[at..at + 72];
            if le[48..].iter().any(|&b| b != 0) {
                return Err(AttestError::Snp("signature component is wider than P-384".into()));
            }
            Ok(le[..48].iter().rev().copied().collect::<Vec<u8>>())
        };
        Ok([field(SIGNED_LEN)?, field(SIGNED_LEN + 72)?].concat())
    }

    /// Verifies the chain VCEK ← ASK ← ARK (ARK pinned) at `at` (Unix seconds; reports carry no
    /// time of their own) and the report's signature under the VCEK.
    pub fn verify(
        self,
        vcek_der: &[u8],
        chain: &AmdChain,
        at: u64,
        allow_debug: bool,
    ) -> Result<SnpVerified, AttestError> {
        if self.debug_allowed() && !allow_debug {
            return Err(AttestError::DebugMode);
        }
        let vcek_der = CertificateDer::from(vcek_der);
        let vcek = webpki::EndEntityCert::try_from(&vcek_der)
            .map_err(|e| AttestError::Certificate(format!("the VCEK is not valid X.509: {e}")))?;
        let ark = CertificateDer::from(chain.ark.as_slice());
        let anchors = [anchor(&ark)?];
        let intermediates = [CertificateDer::from(chain.ask.as_slice())];
        let algs: [&dyn SignatureVerificationAlgorithm; 2] =
            [&AMD_RSA_PSS_SHA384, webpki::ring::ECDSA_P384_SHA384];
        verify_chain(&vcek, &algs, &anchors, &intermediates, at, &[], "VCEK ← ASK ← ARK")?;
        let signature = p1363_to_der(&self.signature_p1363()?);
        vcek.verify_signature(webpki::ring::ECDSA_P384_SHA384, &self.bytes[..SIGNED_LEN], &signature)
            .map_err(|_| AttestError::Signature)?;
        Ok(SnpVerified { ark_sha256: sha256(&chain.ark), checked_at: at, report: self })
    }
}

/// What a verified report proves.
#[derive(Debug, Clone)]
pub struct SnpVerified {
    /// The report, signed by a VCEK that chains to the ARK.
    pub report: SnpReport,
    /// SHA-256 of the ARK the chain ended at.
    pub ark_sha256: Digest,
    /// When the chain was checked (Unix seconds).
    pub checked_at: u64,
}

/// AMD's ARK (pinned) and ASK for one product line.
#[derive(Debug, Clone)]
pub struct AmdChain {
    ark: Vec<u8>,
    ask: Vec<u8>,
}

impl AmdChain {
    /// Finds the ARK (by its pin) and the ASK (the certificate it issued that is not the VLEK
    /// signer) in a PEM bundle such as AMD's `cert_chain`. A certificate that looks like a
    /// pinned root without being it is refused ([`VendorRoot::identify`]).
    pub fn from_pem(pem: &[u8]) -> Result<Self, AttestError> {
        let certs = certificates(pem)?;
        for cert in &certs {
            VendorRoot::identify(cert)?;
        }
        let ark = pinned_ark(&certs)?;
        // The ASK's subject CN is "SEV-Milan"; the ASVK's is "SEV-VLEK-Milan".
        let ask = certs
            .iter()
            .find(|c| *c != &ark && contains(c, b"SEV-Milan"))
            .cloned()
            .ok_or_else(|| AttestError::Root("no ASK (CN=SEV-Milan) in the AMD chain".into()))?;
        Ok(Self { ark, ask })
    }
}

fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, AttestError> {
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| AttestError::Root(format!("AMD certificate chain: {e}")))
}

/// The ARK among `certs`, by its pinned SHA-256.
fn pinned_ark(certs: &[Vec<u8>]) -> Result<Vec<u8>, AttestError> {
    certs.iter().find(|c| VendorRoot::AmdArkMilan.is(c)).cloned().ok_or_else(|| {
        AttestError::Root(format!(
            "no ARK with the pinned SHA-256 {AMD_ARK_MILAN_SHA256} (AMD's ARK for Milan) in the AMD chain"
        ))
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// RSASSA-PSS with SHA-384, MGF1-SHA-384, 48-byte salt, as AMD encodes its AlgorithmIdentifier:
/// with the explicit default `trailerField [3] 1`, which webpki's built-in PSS identifiers omit.
#[derive(Debug)]
struct AmdRsaPssSha384;

static AMD_RSA_PSS_SHA384: AmdRsaPssSha384 = AmdRsaPssSha384;

const AMD_PSS_SHA384_ALG_ID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x39, 0xa0, 0x0f, 0x30, 0x0d,
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a,
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86,
    0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x30, 0xa3, 0x03, 0x02,
    0x01, 0x01,
];

impl SignatureVerificationAlgorithm for AmdRsaPssSha384 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PSS_2048_8192_SHA384, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        rustls_pki_types::alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        AlgorithmIdentifier::from_slice(AMD_PSS_SHA384_ALG_ID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookalike_ark_in_a_given_chain_is_refused() {
        let Some(fixtures) = teelog_fixtures::open("attestation") else { return };
        let milan = fixtures.read("roots/amd_milan_ask_ark_asvk.pem");
        assert!(AmdChain::from_pem(&milan).is_ok());
        let mut ark = pinned_ark(&certificates(&milan).unwrap()).unwrap();
        let last = ark.len() - 1;
        ark[last] ^= 1;
        let lookalike = teelog_core::crypto::pem_encode("CERTIFICATE", &ark);
        let chain = [&milan[..], b"\n", lookalike.as_bytes()].concat();
        match AmdChain::from_pem(&chain) {
            Err(AttestError::Root(why)) => {
                assert!(why.contains("AMD's ARK for Milan") && why.contains("lookalike"), "{why}")
            }
            other => panic!("a lookalike ARK was not refused: {other:?}"),
        }
    }
}
