//! The enrollment CA itself: its key and certificate, and the AK certificates it issues (behind
//! the `issue` feature, so that verifiers do not link rcgen).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::super::{name_of, TpmPublic};
use crate::{AttestError, TrustRoot};

const CA_NAME: &str = "teelog TPM enrollment CA";
const CA_LIFETIME: Duration = Duration::days(365 * 30);
/// An AK certificate lasts as long as the logs it vouches for must stay verifiable.
const AK_LIFETIME: Duration = Duration::days(365 * 30);
/// tcg-kp-AIKCertificate (2.23.133.8.3), the extended key usage of AK certificates, as arcs.
const EKU_AK_CERTIFICATE: &[u64] = &[2, 23, 133, 8, 3];

fn cert_err(e: impl std::fmt::Display) -> AttestError {
    AttestError::Certificate(format!("enrollment CA: {e}"))
}

fn at_time(seconds: u64) -> Result<OffsetDateTime, AttestError> {
    OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).map_err(cert_err)?).map_err(cert_err)
}

fn ca_params(now: OffsetDateTime) -> Result<CertificateParams, AttestError> {
    let mut params = CertificateParams::new(Vec::new()).map_err(cert_err)?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::days(1);
    params.not_after = now + CA_LIFETIME;
    Ok(params)
}

/// The CA that certifies attestation keys: its P-384 key and self-signed certificate.
pub struct EnrollmentCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_der: Vec<u8>,
}

impl EnrollmentCa {
    /// A new CA; `now` is Unix seconds. Returns it with its private key as PKCS#8 PEM.
    pub fn generate(now: u64) -> Result<(Self, String), AttestError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let key_pem = teelog_core::crypto::pem_encode("PRIVATE KEY", &key.serialize_der());
        let params = ca_params(at_time(now)?)?;
        let certificate_der = params.self_signed(&key).map_err(cert_err)?.der().to_vec();
        Ok((Self { issuer: Issuer::new(params, key), certificate_der }, key_pem))
    }

    /// A CA saved earlier: its certificate (PEM or DER) and PKCS#8 PEM key, which must match.
    pub fn load(certificate: &[u8], key_pem: &str) -> Result<Self, AttestError> {
        let root = TrustRoot::from_pem_or_der(certificate)?;
        // A root read from bytes always holds them; only pinned roots come without.
        let certificate_der = root.der().map(<[u8]>::to_vec).ok_or_else(|| cert_err("no certificate"))?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(cert_err)?;
        let key =
            KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
        let root_der = CertificateDer::from(certificate_der.as_slice());
        let cert = webpki::EndEntityCert::try_from(&root_der).map_err(cert_err)?;
        if cert.subject_public_key_info().as_ref() != key.subject_public_key_info() {
            return Err(cert_err("the key is not the certificate's"));
        }
        // The issuer is named by the certificate's subject, which these parameters rebuild.
        let params = ca_params(OffsetDateTime::now_utc())?;
        Ok(Self { issuer: Issuer::new(params, key), certificate_der })
    }

    /// The CA's certificate (DER): the root an auditor passes with `--trust-root`.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// Certifies the AK whose TPM2B_PUBLIC is `ak_public`, once the caller has seen credential
    /// activation succeed for the name that area has. `now` is Unix seconds.
    pub fn certify_ak(&self, ak_public: &[u8], now: u64) -> Result<Vec<u8>, AttestError> {
        let ak = TpmPublic::parse(ak_public)?;
        ak.check_attestation_key()?;
        let now = at_time(now)?;
        let mut params = CertificateParams::new(Vec::new()).map_err(cert_err)?;
        let name = hex::encode(name_of(ak_public)?);
        params.distinguished_name.push(DnType::CommonName, format!("teelog TPM attestation key {name}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Only tcg-kp-AIKCertificate: a certificate that no TLS or Nitro document check accepts,
        // so the AK (which signs what the TPM hands it) vouches for nothing but TPM evidence.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(EKU_AK_CERTIFICATE.to_vec())];
        params.not_before = now - Duration::minutes(1);
        params.not_after = now + AK_LIFETIME;
        let cert = params.signed_by(&ForeignKey(ak.key.clone()), &self.issuer).map_err(cert_err)?;
        Ok(cert.der().to_vec())
    }
}

/// A public key rcgen certifies without holding its private half.
struct ForeignKey(teelog_core::PublicKey);

impl PublicKeyData for ForeignKey {
    fn der_bytes(&self) -> &[u8] {
        // The SPKI's BIT STRING: the uncompressed point after the fixed P-256 prefix.
        let spki = self.0.spki_der();
        &spki[spki.len() - 65..]
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::super::EKU_AK_CERTIFICATE_DER;
    use super::*;
    use crate::verify_chain;
    use crate::{anchor, verify_chain_for};

    #[test]
    fn an_ak_certificate_serves_tpm_evidence_only() {
        // A real AK's public area, from the TPM evidence vector.
        let vector: serde_json::Value = serde_json::from_slice(
            &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors/tpm-evidence-v1.json"))
                .unwrap(),
        )
        .unwrap();
        let ak_public = hex::decode(vector["members"]["ak_public"].as_str().unwrap()).unwrap();
        let now = 1_800_000_000;
        let (ca, key_pem) = EnrollmentCa::generate(now).unwrap();
        let cert = ca.certify_ak(&ak_public, now).unwrap();
        // The signing key is no restricted key: the CA never certifies it as an AK.
        let key_public = hex::decode(vector["members"]["key_public"].as_str().unwrap()).unwrap();
        let err = ca.certify_ak(&key_public, now).unwrap_err().to_string();
        assert!(err.contains("not a restricted"), "{err}");
        let (root, leaf) =
            (CertificateDer::from(ca.certificate_der()), CertificateDer::from(cert.as_slice()));
        let anchors = [anchor(&root).unwrap()];
        let leaf = webpki::EndEntityCert::try_from(&leaf).unwrap();
        let algs = [webpki::ring::ECDSA_P384_SHA384];
        let usage = webpki::KeyUsage::required(EKU_AK_CERTIFICATE_DER);
        assert!(verify_chain_for(&leaf, usage, &algs, &anchors, &[], now, "AK").is_ok());
        // Not as the leaf of a Nitro-layout document, nor as a TLS client.
        let err = verify_chain(&leaf, &algs, &anchors, &[], now, &[], "as a Nitro leaf").err().unwrap();
        assert!(err.to_string().contains("as a Nitro leaf"), "{err}");
        // The CA comes back from its files with the same name and key.
        let again = EnrollmentCa::load(&pem_encode(ca.certificate_der()), &key_pem).unwrap();
        let cert = again.certify_ak(&ak_public, now).unwrap();
        let leaf = CertificateDer::from(cert.as_slice());
        let leaf = webpki::EndEntityCert::try_from(&leaf).unwrap();
        let usage = webpki::KeyUsage::required(EKU_AK_CERTIFICATE_DER);
        assert!(verify_chain_for(&leaf, usage, &algs, &anchors, &[], now, "AK").is_ok());
    }

    fn pem_encode(der: &[u8]) -> Vec<u8> {
        teelog_core::crypto::pem_encode("CERTIFICATE", der).into_bytes()
    }
}
