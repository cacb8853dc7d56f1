//! RFC 3161 trusted time, sans-IO: a timestamp request over a SHA-256 digest, and a timestamp
//! token checked offline — the CMS signature over the token's signed attributes, the signer's
//! certificate chain to a TSA root given by the auditor (with the time-stamping key purpose, at
//! the token's own time), and the message imprint. The caller sends the request (HTTP POST,
//! `application/timestamp-query`) and keeps the token.
//!
//! Must never depend on the shipper, the gateway or any I/O crate.
#![forbid(unsafe_code)]

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::{GeneralizedTime, ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use sha2::Digest as _;
use teelog_core::timestamp::UnixNanos;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// id-kp-timeStamping (1.3.6.1.5.5.7.3.8), as webpki wants the OID: its encoded value.
const TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeStamp {
    /// When the TSA says it stamped the digest.
    pub gen_time: UnixNanos,
    /// The accuracy the TSA states for `gen_time` (0 when it states none): the time it stamped
    /// the digest lies within `gen_time` plus or minus this.
    pub accuracy: UnixNanos,
    /// The token's serial number, hex.
    pub serial: String,
    /// The SHA-256 of the signer's certificate, hex: which TSA key vouches.
    pub tsa_certificate: String,
}

/// Why a response or token is not a trusted timestamp of the digest; the message names the part.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TsaError {
    /// The bytes are not the DER structure named.
    #[error("not a DER {what}: {why}")]
    Der {
        /// The structure expected.
        what: &'static str,
        /// The decoder's message.
        why: String,
    },
    /// The TSA refused the request.
    #[error("the TSA did not grant the timestamp (status {0})")]
    NotGranted(String),
    /// A part of the token is not what RFC 3161 requires there.
    #[error("the token's {0}")]
    Structure(&'static str),
    /// The token stamps another digest, or with a hash teelog does not use.
    #[error("the token stamps {stamped}, not the digest {expected}")]
    Imprint {
        /// What it stamps (hex, or the hash algorithm's OID).
        stamped: String,
        /// The digest expected, hex.
        expected: String,
    },
    /// The signed attributes' message digest is not the digest of the token's content.
    #[error("the signed message digest does not match the token's content: the TSTInfo was changed")]
    ContentDigest,
    /// The signer's certificate does not chain to a given TSA root for time-stamping.
    #[error(
        "the TSA certificate does not chain to a given --tsa-root for time-stamping at the token's time: {0}"
    )]
    Chain(String),
    /// The signature over the signed attributes does not verify.
    #[error("the TSA's signature does not verify under its certificate")]
    Signature,
}

/// A DER `TimeStampReq` for `digest` (SHA-256), asking for the TSA's certificate in the token.
pub fn request(digest: &[u8; 32], nonce: u64) -> Result<Vec<u8>, TsaError> {
    let encode = der_error("TimeStampReq");
    let request = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: x509_cert::spki::AlgorithmIdentifier {
                oid: ID_SHA256,
                parameters: Some(Any::null()),
            },
            hashed_message: OctetString::new(digest.to_vec()).map_err(&encode)?,
        },
        req_policy: None,
        nonce: Some(der::asn1::Int::new(minimal(&nonce.to_be_bytes())).map_err(&encode)?),
        cert_req: true,
        extensions: None,
    };
    request.to_der().map_err(encode)
}

fn der_error(what: &'static str) -> impl Fn(der::Error) -> TsaError {
    move |e| TsaError::Der { what, why: e.to_string() }
}

/// A positive integer's big-endian bytes without the leading zeros DER forbids (keeping one
/// where the next byte's top bit would make it negative).
fn minimal(bytes: &[u8]) -> &[u8] {
    let mut start = 0;
    while start + 1 < bytes.len() && bytes[start] == 0 && bytes[start + 1] < 0x80 {
        start += 1;
    }
    &bytes[start..]
}

/// The token of a DER `TimeStampResp`, if the TSA granted it.
pub fn token_of_response(response: &[u8]) -> Result<Vec<u8>, TsaError> {
    let response = TimeStampResp::from_der(response).map_err(der_error("TimeStampResp"))?;
    let status = response.status.status as u8;
    // granted (0) or grantedWithMods (1)
    if status > 1 {
        return Err(TsaError::NotGranted(status.to_string()));
    }
    let token = response.time_stamp_token.ok_or(TsaError::Structure("response holds no token"))?;
    token.to_der().map_err(der_error("TimeStampToken"))
}

/// Verifies `token` (a DER `TimeStampToken`) as a timestamp of `digest` by a TSA whose
/// certificate chains to one of `roots` (DER) for time-stamping at the token's time.
pub fn verify_token(token: &[u8], digest: &[u8; 32], roots: &[Vec<u8>]) -> Result<TimeStamp, TsaError> {
    let info = ContentInfo::from_der(token).map_err(der_error("TimeStampToken"))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(TsaError::Structure("content is not CMS SignedData"));
    }
    let signed: SignedData = info.content.decode_as().map_err(der_error("SignedData"))?;
    if signed.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(TsaError::Structure("content type is not TSTInfo"));
    }
    let content =
        signed.encap_content_info.econtent.as_ref().ok_or(TsaError::Structure("TSTInfo is missing"))?;
    let content = OctetString::from_der(&content.to_der().map_err(der_error("eContent"))?)
        .map_err(der_error("eContent OCTET STRING"))?;
    let tst = TstInfo::from_der(content.as_bytes()).map_err(der_error("TSTInfo"))?;
    if tst.message_imprint.hash_algorithm.oid != ID_SHA256
        || tst.message_imprint.hashed_message.as_bytes() != digest
    {
        return Err(TsaError::Imprint {
            stamped: if tst.message_imprint.hash_algorithm.oid == ID_SHA256 {
                hex::encode(tst.message_imprint.hashed_message.as_bytes())
            } else {
                format!("a digest by hash {}", tst.message_imprint.hash_algorithm.oid)
            },
            expected: hex::encode(digest),
        });
    }

    let mut signers = signed.signer_infos.0.iter();
    let (Some(signer), None) = (signers.next(), signers.next()) else {
        return Err(TsaError::Structure("signer infos are not exactly one"));
    };
    let attributes =
        signer.signed_attrs.as_ref().ok_or(TsaError::Structure("signed attributes are missing"))?;
    let single = |oid: ObjectIdentifier| -> Result<&Any, TsaError> {
        let mut found = attributes.iter().filter(|a| a.oid == oid);
        match (found.next(), found.next()) {
            (Some(attribute), None) if attribute.values.len() == 1 => {
                attribute.values.get(0).ok_or(TsaError::Structure("signed attribute has no value"))
            }
            _ => {
                Err(TsaError::Structure("signed attributes lack exactly one content type and message digest"))
            }
        }
    };
    let content_type: ObjectIdentifier =
        single(ID_CONTENT_TYPE)?.decode_as().map_err(der_error("content-type attribute"))?;
    if content_type != ID_CT_TST_INFO {
        return Err(TsaError::Structure("signed content type is not TSTInfo"));
    }
    let message_digest: OctetString =
        single(ID_MESSAGE_DIGEST)?.decode_as().map_err(der_error("message-digest attribute"))?;
    let content_digest = hash(&signer.digest_alg.oid, content.as_bytes())?;
    if message_digest.as_bytes() != content_digest.as_slice() {
        return Err(TsaError::ContentDigest);
    }

    // The signer's certificate, among those the token carries.
    let certificates: Vec<&x509_cert::Certificate> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect();
    let SignerIdentifier::IssuerAndSerialNumber(id) = &signer.sid else {
        return Err(TsaError::Structure("signer is not named by issuer and serial number"));
    };
    let signer_cert = certificates
        .iter()
        .find(|c| {
            c.tbs_certificate.issuer == id.issuer && c.tbs_certificate.serial_number == id.serial_number
        })
        .ok_or(TsaError::Structure("signer's certificate is not in the token"))?;
    let signer_der = signer_cert.to_der().map_err(der_error("certificate"))?;
    let others: Vec<CertificateDer<'static>> = certificates
        .iter()
        .filter(|c| !std::ptr::eq(**c, *signer_cert))
        .filter_map(|c| c.to_der().ok().map(CertificateDer::from))
        .collect();

    let leaf_der = CertificateDer::from(signer_der.as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| TsaError::Chain(e.to_string()))?;
    let root_ders: Vec<CertificateDer<'_>> =
        roots.iter().map(|r| CertificateDer::from(r.as_slice())).collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<_, _>>()
        .map_err(|e| TsaError::Chain(format!("a --tsa-root is not a usable certificate: {e}")))?;
    let gen_time = unix_nanos(&tst.gen_time);
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(gen_time / 1_000_000_000).unwrap_or(0),
    ));
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &others,
        at,
        webpki::KeyUsage::required(TIME_STAMPING),
        None,
        None,
    )
    .map_err(|e| TsaError::Chain(e.to_string()))?;

    // The signature is over the signed attributes encoded as a SET OF.
    let signed_attributes: SetOfVec<x509_cert::attr::Attribute> = attributes.clone();
    let message = signed_attributes.to_der().map_err(der_error("signed attributes"))?;
    let signature = signer.signature.as_bytes();
    let verified = algorithms(&signer.signature_algorithm.oid, &signer.digest_alg.oid)
        .iter()
        .any(|alg| leaf.verify_signature(*alg, &message, signature).is_ok());
    if !verified {
        return Err(TsaError::Signature);
    }
    // RFC 3161 §2.4.2: seconds, then millis and micros of 1 to 999 (anything else counts as 0).
    let accuracy = tst.accuracy.as_ref().map_or(0, |a| {
        let part = |v: Option<i16>, unit: i64| {
            v.filter(|v| (1..=999).contains(v)).map_or(0, |v| i64::from(v) * unit)
        };
        let seconds =
            a.seconds.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1_000_000_000));
        seconds.saturating_add(part(a.millis, 1_000_000)).saturating_add(part(a.micros, 1_000))
    });
    Ok(TimeStamp {
        gen_time,
        accuracy,
        serial: hex::encode(tst.serial_number.as_bytes()),
        tsa_certificate: hex::encode(sha2::Sha256::digest(&signer_der)),
    })
}

/// The signature algorithms a signer info's algorithm (and digest) can mean.
fn algorithms(
    signature: &ObjectIdentifier,
    digest: &ObjectIdentifier,
) -> Vec<&'static dyn SignatureVerificationAlgorithm> {
    use webpki::ring as alg;
    match (*signature, *digest) {
        (SHA256_WITH_RSA, _) | (RSA_ENCRYPTION, ID_SHA256) => vec![alg::RSA_PKCS1_2048_8192_SHA256],
        (SHA384_WITH_RSA, _) | (RSA_ENCRYPTION, ID_SHA384) => vec![alg::RSA_PKCS1_2048_8192_SHA384],
        (SHA512_WITH_RSA, _) | (RSA_ENCRYPTION, ID_SHA512) => vec![alg::RSA_PKCS1_2048_8192_SHA512],
        (ECDSA_WITH_SHA256, _) => vec![alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        (ECDSA_WITH_SHA384, _) => vec![alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
        _ => Vec::new(),
    }
}

fn hash(algorithm: &ObjectIdentifier, data: &[u8]) -> Result<Vec<u8>, TsaError> {
    Ok(match *algorithm {
        ID_SHA256 => sha2::Sha256::digest(data).to_vec(),
        ID_SHA384 => sha2::Sha384::digest(data).to_vec(),
        ID_SHA512 => sha2::Sha512::digest(data).to_vec(),
        _ => return Err(TsaError::Structure("digest algorithm is not SHA-256, SHA-384 or SHA-512")),
    })
}

fn unix_nanos(time: &GeneralizedTime) -> UnixNanos {
    UnixNanos::try_from(time.to_unix_duration().as_nanos()).unwrap_or(UnixNanos::MAX)
}

/// The TSA roots (DER certificates) an auditor trusts for timestamp tokens: the verifier the
/// core's evidence and checkpoint checks take.
pub struct TsaRoots(pub Vec<Vec<u8>>);

impl teelog_core::evidence::TimestampVerifier for TsaRoots {
    fn verify_token(&self, token: &[u8], digest: &[u8; 32]) -> Result<UnixNanos, String> {
        verify_token(token, digest, &self.0).map(|t| t.gen_time).map_err(|e| e.to_string())
    }

    fn verify_token_interval(
        &self,
        token: &[u8],
        digest: &[u8; 32],
    ) -> Result<(UnixNanos, UnixNanos), String> {
        verify_token(token, digest, &self.0)
            .map(|t| (t.gen_time.saturating_sub(t.accuracy), t.gen_time.saturating_add(t.accuracy)))
            .map_err(|e| e.to_string())
    }
}
