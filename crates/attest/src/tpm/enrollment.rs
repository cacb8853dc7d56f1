//! Enrollment of a TPM's attestation key: the EK certificate is checked against the TPM maker's
//! root, credential activation (done by the caller, against the TPM) proves the AK lives beside
//! that EK, and then an enrollment CA issues the AK a certificate. Auditors trust the CA's root.

use rustls_pki_types::CertificateDer;

use super::ek_spki;
use crate::{anchor, root_certificates, verify_chain_for, AttestError, TrustRoot};

#[cfg(feature = "issue")]
mod ca;
#[cfg(feature = "issue")]
pub use ca::EnrollmentCa;

/// tcg-kp-AIKCertificate (2.23.133.8.3), the extended key usage of AK certificates, as DER.
pub(crate) const EKU_AK_CERTIFICATE_DER: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x03];
/// tcg-kp-EKCertificate (2.23.133.8.1), the extended key usage of EK certificates, as DER.
const EKU_EK_CERTIFICATE_DER: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x01];

/// Checks that `ek_certificate` chains to one of the TPM makers' `roots` at `at` (Unix
/// seconds), is an EK certificate, and certifies the EK whose TPM2B_PUBLIC is `ek_public`.
pub fn check_ek_certificate(
    ek_certificate: &[u8],
    intermediates: &[Vec<u8>],
    ek_public: &[u8],
    roots: &[TrustRoot],
    at: u64,
) -> Result<(), AttestError> {
    let der = CertificateDer::from(ek_certificate);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| AttestError::Certificate(format!("the EK certificate is not valid X.509: {e}")))?;
    let roots = root_certificates(roots, &[]);
    let anchors = roots.iter().map(|(_, der)| anchor(der)).collect::<Result<Vec<_>, _>>()?;
    let intermediates: Vec<CertificateDer<'_>> =
        intermediates.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let algs = [
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        webpki::ring::RSA_PKCS1_2048_8192_SHA384,
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
    ];
    let usage = webpki::KeyUsage::required(EKU_EK_CERTIFICATE_DER);
    verify_chain_for(&cert, usage, &algs, &anchors, &intermediates, at, "EK certificate ← TPM maker")?;
    if cert.subject_public_key_info().as_ref() != ek_spki(ek_public)? {
        return Err(AttestError::Tpm("the EK certificate is for another key than this TPM's EK".into()));
    }
    Ok(())
}
