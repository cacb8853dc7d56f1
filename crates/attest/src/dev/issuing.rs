//! Issuing dev documents: a new local root, a three-hour signing certificate under it, and the
//! COSE_Sign1 document (behind the `issue` feature, so that verifiers do not link rcgen).

use std::collections::BTreeMap;

use ciborium::Value;
use coset::{iana, CborSerializable, CoseSign1Builder, HeaderBuilder};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use teelog_core::{PublicKey, SigAlg, SoftwareKey};
use time::{Duration, OffsetDateTime};

use crate::AttestError;

/// How long a dev signing certificate lives, like a Nitro one.
const LEAF_LIFETIME: Duration = Duration::hours(3);
const ROOT_LIFETIME: Duration = Duration::days(365 * 30);

/// What `teelog keygen --dev` keeps: the document, and the root an auditor must be given.
pub struct DevAttestation {
    /// The document (Nitro layout, COSE_Sign1).
    pub document: Vec<u8>,
    /// The dev root certificate (DER) the document chains to, new for each identity.
    pub root_der: Vec<u8>,
}

/// The fields of a dev document.
pub struct DevClaims<'a> {
    /// The document's `module_id`; teelog's start with `dev-`, which verifiers use to tell the
    /// auditor which root is missing.
    pub module_id: &'a str,
    /// The document's time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// PCR index to value (Nitro's PCRs are SHA-384, 48 bytes).
    pub pcrs: &'a BTreeMap<u64, Vec<u8>>,
    /// The teelog signing key the document binds, as its SubjectPublicKeyInfo in `public_key`.
    pub bound_key: &'a PublicKey,
    /// The document's nonce: the previous epoch's head, if any.
    pub nonce: Option<&'a [u8]>,
}

fn cert_err(e: impl std::fmt::Display) -> AttestError {
    AttestError::Certificate(format!("cannot issue the dev certificate: {e}"))
}

/// Issues a new dev root, a signing certificate under it, and a document carrying `claims`.
pub fn issue(claims: &DevClaims<'_>) -> Result<DevAttestation, AttestError> {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "teelog dev root (not hardware-backed)");
    issue_under(name, claims)
}

/// [`issue`] under a new root named `root_name` (tests name one after a vendor root).
pub(crate) fn issue_under(
    root_name: DistinguishedName,
    claims: &DevClaims<'_>,
) -> Result<DevAttestation, AttestError> {
    let now =
        OffsetDateTime::from_unix_timestamp(i64::try_from(claims.timestamp_ms / 1000).map_err(cert_err)?)
            .map_err(cert_err)?;
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(cert_err)?;
    let mut root = CertificateParams::new(Vec::new()).map_err(cert_err)?;
    root.distinguished_name = root_name;
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.not_before = now - Duration::days(1);
    root.not_after = now + ROOT_LIFETIME;
    let root_cert = root.self_signed(&root_key).map_err(cert_err)?;
    let issuer = Issuer::new(root, root_key);

    // The document is signed with r || s, which ring's fixed encoding gives; rcgen signs the
    // certificate with the same key.
    let leaf_pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es384).map_err(cert_err)?;
    let leaf_key = SoftwareKey::from_pkcs8(SigAlg::Es384, &leaf_pkcs8).map_err(cert_err)?;
    let leaf_cert_key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(leaf_pkcs8.as_slice()),
        &rcgen::PKCS_ECDSA_P384_SHA384,
    )
    .map_err(cert_err)?;
    let mut leaf = CertificateParams::new(Vec::new()).map_err(cert_err)?;
    leaf.distinguished_name.push(DnType::CommonName, format!("teelog dev enclave {}", claims.module_id));
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = now - Duration::minutes(1);
    leaf.not_after = now + LEAF_LIFETIME;
    let leaf_cert = leaf.signed_by(&leaf_cert_key, &issuer).map_err(cert_err)?;

    let bytes = |b: &[u8]| Value::Bytes(b.to_vec());
    let payload = Value::Map(vec![
        (Value::Text("module_id".into()), Value::Text(claims.module_id.into())),
        (Value::Text("digest".into()), Value::Text("SHA384".into())),
        (Value::Text("timestamp".into()), Value::Integer(claims.timestamp_ms.into())),
        (
            Value::Text("pcrs".into()),
            Value::Map(claims.pcrs.iter().map(|(i, v)| (Value::Integer((*i).into()), bytes(v))).collect()),
        ),
        (Value::Text("certificate".into()), bytes(leaf_cert.der())),
        (Value::Text("cabundle".into()), Value::Array(vec![bytes(root_cert.der())])),
        (Value::Text("public_key".into()), bytes(claims.bound_key.spki_der())),
        (Value::Text("user_data".into()), Value::Null),
        (Value::Text("nonce".into()), claims.nonce.map_or(Value::Null, bytes)),
    ]);
    let mut payload_bytes = Vec::new();
    ciborium::ser::into_writer(&payload, &mut payload_bytes).map_err(cert_err)?;
    let document = CoseSign1Builder::new()
        .protected(HeaderBuilder::new().algorithm(iana::Algorithm::ES384).build())
        .payload(payload_bytes)
        .try_create_signature(&[], |tbs| leaf_key.sign(tbs))
        .map_err(cert_err)?
        .build()
        .to_vec()
        .map_err(|e| AttestError::Cose(e.to_string()))?;
    Ok(DevAttestation { document, root_der: root_cert.der().to_vec() })
}
